"""The cache-exporter Grafana dashboards: built from code (``build.py``), committed as JSON.

``build.py`` needs grafana-foundation-sdk (a build-time dependency, extra ``dashboards``);
``queries.py`` reads the committed JSON and needs nothing beyond the standard library.
"""
