# cache-exporter image: build a virtualenv in one stage, copy only the venv into a clean one.
# Not built in this repository's CI (no Docker engine there); tests/test_container.py replays
# its install steps in a clean venv and checks the structure below.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
# Dependencies as wheels only (redis, hiredis, PyYAML, ... ship manylinux wheels): no compiler in
# any stage. The dependency list is pyproject.toml's; nothing is repeated here.
RUN python -m venv /opt/cache-exporter \
 && /opt/cache-exporter/bin/pip install --only-binary=:all: --no-compile . \
 && /opt/cache-exporter/bin/cache-exporter --version \
 && mkdir -p /state

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="cache-exporter" \
      org.opencontainers.image.description="Prometheus exporter that warns before Redis, Memcached, app heaps and HTTP caches run out" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/cache-exporter /opt/cache-exporter
COPY examples/config.yml /etc/cache-exporter/config.yml
# The forecast history across restarts (--state.dir): an empty directory the user below owns,
# a volume so that a read-only root filesystem still leaves it writable.
COPY --from=build --chown=65532:65532 /state /var/lib/cache-exporter
VOLUME /var/lib/cache-exporter
ENV PATH=/opt/cache-exporter/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# A numeric non-root user (distroless "nonroot"): works with runAsNonRoot and a read-only root fs.
USER 65532:65532
EXPOSE 9611
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9611/healthz', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["cache-exporter"]
CMD ["run", "--config.file", "/etc/cache-exporter/config.yml", "--web.listen-address", ":9611", "--state.dir", "/var/lib/cache-exporter"]
