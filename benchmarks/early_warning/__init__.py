"""The early-warning benchmark's parts (benchmarks/bench_early_warning.py runs them).

* ``scenarios``: the scenario library -- fills that must warn, look-alikes that must not;
* ``peer.rules.yml``: the three peer rules it is compared with (not shipped);
* ``replay``: a scenario poll by poll through the repository's Forecaster, into exported series;
* ``promtool_eval``: those series through ``promtool test rules``, and the firing timeline read back.
"""
