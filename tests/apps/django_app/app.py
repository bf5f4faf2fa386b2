"""A one-module Django app caching in Redis through django-redis, instrumented by django-prometheus.

    APP_PORT=8000 REDIS_URL=redis://127.0.0.1:6379/0 python app.py

Serves (Django's threaded development server, no autoreloader):

* ``/metrics``   django-prometheus' view (the default prometheus_client registry: process_*,
  python_*, django_http_*, django_cache_get_{,hits_,misses_,fail_}total{backend="redis"}).
* ``/item/<n>``  ``cache.get("item:<n>")``; on a miss computes the value and ``cache.set``\\s it.
  The cache is django-prometheus' django-redis backend with ``IGNORE_EXCEPTIONS: True``, so
  with Redis down every get is a swallowed failure and the view still answers 200 — the
  silent degradation the exporter's ``app_cache_backend_errors_total`` is there to show.
  The body is ``hit <n>`` or ``miss <n>`` (a failed get reads as a miss).

``CACHE_BACKEND=stock`` configures the stock ``django_redis.cache.RedisCache`` instead, with the same
options: django-redis has no metrics and no signals, so /metrics then has no ``django_cache_*`` at all
and a Redis outage is invisible. The one-line fix is the ``BACKEND`` below (django-prometheus'
subclass of django-redis' backend), plus ``django_prometheus`` in INSTALLED_APPS and its /metrics URL.
"""

from __future__ import annotations

import hashlib
import os
import sys

import django
from django.conf import settings
from django.urls import include, path

settings.configure(
    DEBUG=False,
    SECRET_KEY="test-only-not-secret",
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["django_prometheus"],
    MIDDLEWARE=[
        "django_prometheus.middleware.PrometheusBeforeMiddleware",
        "django_prometheus.middleware.PrometheusAfterMiddleware",
    ],
    DATABASES={},
    CACHES={
        "default": {
            "BACKEND": {"stock": "django_redis.cache.RedisCache"}.get(
                os.environ.get("CACHE_BACKEND", ""),
                "django_prometheus.cache.backends.redis.RedisCache"),  # django_redis.cache.RedisCache + metrics
            "LOCATION": os.environ["REDIS_URL"],
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                "IGNORE_EXCEPTIONS": True,
                "SOCKET_CONNECT_TIMEOUT": 1,
                "SOCKET_TIMEOUT": 1,
            },
        }
    },
    LOGGING_CONFIG=None,
    USE_TZ=True,
)
django.setup()

from django.core.cache import cache  # noqa: E402  (needs settings)
from django.http import HttpRequest, HttpResponse  # noqa: E402


def item(request: HttpRequest, n: int) -> HttpResponse:
    key = f"item:{n}"
    value = cache.get(key)
    if value is not None:
        return HttpResponse(f"hit {n} {value}", content_type="text/plain")
    value = hashlib.sha256(str(n).encode()).hexdigest()  # "compute"
    cache.set(key, value, timeout=300)
    return HttpResponse(f"miss {n} {value}", content_type="text/plain")


urlpatterns = [
    path("item/<int:n>", item),
    path("", include("django_prometheus.urls")),  # /metrics
]

if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    port = os.environ["APP_PORT"]
    execute_from_command_line([sys.argv[0], "runserver", f"127.0.0.1:{port}", "--noreload", "--skip-checks"])
