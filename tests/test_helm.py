"""The Helm chart (helm/cache-exporter), rendered by a real helm v4 binary.

`helm lint --strict` and `helm template` run on the defaults and on every ci/*-values.yaml; the
rendered core objects are validated against the Kubernetes 1.30 OpenAPI schemas
(kubernetes-validate, strict: unknown fields fail); the assertions here are what helm-unittest
would check elsewhere. The helm binary is `.cache/helm/helm` (`python tools/get_helm.py`, which
`make test` runs), or $HELM.
"""

from __future__ import annotations

import atexit
import copy
import functools
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

import bcrypt
import pytest
import yaml
from conftest import REPO, load_script, need

CHART = REPO / "helm" / "cache-exporter"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
KUBE_VERSION = "1.30.0"
SECRETS_DIR = "/etc/cache-exporter/secrets"
TLS_DIR = "/etc/cache-exporter/tls"
CORE_KINDS = {"Deployment", "Service", "ConfigMap", "ServiceAccount", "PodDisruptionBudget", "NetworkPolicy"}
SHARDED = ("sharding.enabled=true", "sharding.replicas=3", "serviceMonitor.enabled=true")
VALUE_SETS = [None, *CI_VALUES]
VALUE_IDS = ["defaults", *(p.name.removesuffix("-values.yaml") for p in CI_VALUES)]


sync = load_script(REPO / "helm" / "sync.py")
HELM = Path(os.environ.get("HELM") or REPO / ".cache" / "helm" / "helm")
# helm keeps caches and config under $HOME unless told otherwise: keep the tests hermetic.
_HELM_HOME = Path(tempfile.mkdtemp(prefix="helm-home-"))
atexit.register(shutil.rmtree, _HELM_HOME, ignore_errors=True)
HELM_ENV = {**os.environ, "HELM_CACHE_HOME": str(_HELM_HOME / "cache"),
            "HELM_CONFIG_HOME": str(_HELM_HOME / "config"), "HELM_DATA_HOME": str(_HELM_HOME / "data")}


def need_helm() -> None:
    need(HELM.is_file() and os.access(HELM, os.X_OK), f"helm binary at {HELM} (run: python tools/get_helm.py)")


def run_helm(command: str, *args: str, chart: Path = CHART) -> subprocess.CompletedProcess:
    """`helm template release CHART ARGS`, `helm lint CHART ARGS`, `helm install CHART ARGS`."""
    need_helm()
    release = ["release"] if command == "template" else []
    return subprocess.run([str(HELM), command, *release, str(chart), *args],
                          capture_output=True, text=True, env=HELM_ENV, timeout=60)


def kubernetes_validate():  # noqa: ANN201 - the module
    try:
        import kubernetes_validate as module
    except ImportError:
        need(False, "kubernetes-validate (PyPI; in the test extra)")
    return module


def _value_args(values: Path | None, sets: tuple[str, ...]) -> list[str]:
    args = ["-f", str(values)] if values else []
    for s in sets:
        args += ["--set", s]
    return args


@functools.cache
def _render(values: Path | None, sets: tuple[str, ...], chart: Path) -> str:
    return _render_now(values, sets, chart)


def _render_now(values: Path | None, sets: tuple[str, ...], chart: Path) -> str:
    proc = run_helm("template", "--namespace", "monitoring", "--kube-version", KUBE_VERSION,
                    *_value_args(values, sets), chart=chart)
    assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
    return proc.stdout


def render(values: Path | None = None, *sets: str, chart: Path = CHART) -> list[dict]:
    """Every object helm renders, as dicts (deep copies: tests may change them)."""
    docs = [d for d in yaml.safe_load_all(_render(values, tuple(sets), chart)) if d]
    return copy.deepcopy(docs)


def render_values(values: dict, chart: Path = CHART) -> list[dict]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(values, f)
    try:
        return [d for d in yaml.safe_load_all(_render_now(Path(f.name), (), chart)) if d]
    finally:
        os.unlink(f.name)


def template_error(*args: str) -> str:
    proc = run_helm("template", "--kube-version", KUBE_VERSION, *args)
    assert proc.returncode != 0, "helm template should have failed"
    return proc.stderr


def one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def config_map(docs: list[dict]) -> dict:
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and "config.yml" in d["data"]]
    return cm


def container(docs: list[dict]) -> dict:
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def ci(name: str) -> Path:
    return CHART / "ci" / f"{name}-values.yaml"


# --- the binary, the chart's metadata, lint ---------------------------------------------------------

@pytest.mark.servers
def test_helm_is_a_real_v4() -> None:
    need_helm()
    out = subprocess.run([str(HELM), "version", "--short"], capture_output=True, text=True, env=HELM_ENV)
    assert out.returncode == 0 and out.stdout.startswith("v4."), out.stdout + out.stderr


@pytest.mark.servers
def test_chart_metadata() -> None:
    import exporter

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "cache-exporter"
    assert chart["appVersion"] == exporter.__version__
    assert chart["kubeVersion"] == ">=1.25.0-0"
    for key in ("description", "home", "sources", "maintainers", "keywords", "version"):
        assert chart.get(key), key
    err = template_error("--kube-version", "1.24.0")
    assert "kubeVersion" in err or "incompatible" in err, err


@pytest.mark.servers
@pytest.mark.parametrize("values", VALUE_SETS, ids=VALUE_IDS)
def test_lint_strict(values: Path | None) -> None:
    proc = run_helm("lint", "--strict", *_value_args(values, ()))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout, proc.stdout


@pytest.mark.servers
@pytest.mark.parametrize("setting, complaint", [
    ("replicaCount=true", "/replicaCount"),
    ("service.port=abc", "/service/port"),
    ("serviceMonitor.enabled=yes", "/serviceMonitor/enabled"),
    ("prometheusRule.overrides.CacheTargetDown.severity=page", "/prometheusRule/overrides/CacheTargetDown/severity"),
    ("logLevel=verbose", "/logLevel"),
    ("dashboards.labels.grafana_dashboard=1", "/dashboards/labels/grafana_dashboard"),
    ("noSuchKey=1", "noSuchKey"),
])
def test_schema_violation_fails_lint(setting: str, complaint: str) -> None:
    proc = run_helm("lint", "--strict", "--set", setting)
    assert proc.returncode != 0, proc.stdout
    assert complaint in proc.stdout + proc.stderr, proc.stdout + proc.stderr


# --- rendering and the Kubernetes schemas ---------------------------------------------------------

@pytest.mark.servers
@pytest.mark.parametrize("values", VALUE_SETS, ids=VALUE_IDS)
def test_rendered_objects_are_valid_kubernetes(values: Path | None) -> None:
    kv = kubernetes_validate()
    docs = render(values)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount"} <= kinds
    validated = 0
    for doc in docs:
        if doc["kind"] in CORE_KINDS:
            try:
                kv.validate(doc, KUBE_VERSION, strict=True)
            except kv.ValidationError as exc:
                raise AssertionError(f"{doc['kind']}/{doc['metadata']['name']}: {exc.message} "
                                     f"at {list(exc.path)}") from None
            validated += 1
        else:
            assert doc["kind"] in {"ServiceMonitor", "PrometheusRule"}, doc["kind"]
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert validated >= 4


@pytest.mark.servers
def test_valid_at_the_oldest_supported_kubernetes() -> None:
    """kubeVersion says >=1.25: everything the chart can render exists in 1.25's API."""
    kv = kubernetes_validate()
    docs = render(ci("monitoring"), "dashboards.enabled=false")
    core = [doc for doc in docs if doc["kind"] in CORE_KINDS]
    assert {doc["kind"] for doc in core} == set(CORE_KINDS), "monitoring values render every core kind"
    for doc in core:
        kv.validate(doc, "1.25.0", strict=True)


@pytest.mark.servers
def test_the_validator_rejects_what_it_should() -> None:
    """Strict validation is really on: an unknown field and a wrong type fail."""
    kv = kubernetes_validate()
    deployment = one(render(), "Deployment")
    kv.validate(deployment, KUBE_VERSION, strict=True)
    bad = copy.deepcopy(deployment)
    bad["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, KUBE_VERSION, strict=True)
    bad = copy.deepcopy(deployment)
    bad["spec"]["replicas"] = "one"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, KUBE_VERSION, strict=True)


@pytest.mark.servers
@pytest.mark.parametrize("values", VALUE_SETS, ids=VALUE_IDS)
def test_standard_labels_on_every_object(values: Path | None) -> None:
    for doc in render(values):
        labels = doc["metadata"]["labels"]
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        assert labels["app.kubernetes.io/name"] == "cache-exporter", where
        assert labels["app.kubernetes.io/instance"] == "release", where
        assert labels["app.kubernetes.io/version"] == "0.1.0", where
        assert labels["app.kubernetes.io/managed-by"] == "Helm", where
        assert labels["helm.sh/chart"] == "cache-exporter-0.1.0", where
    pod_labels = one(render(values), "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["app.kubernetes.io/instance"] == "release"


def pod_filesystem(docs: list[dict], root: Path) -> Path:
    """Lay out under *root* the files the exporter container would see at its mount paths (the
    config, one file per secret item, TLS files) and return the config path, with its absolute
    /etc/cache-exporter paths moved under *root*."""
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_text = config_map(docs)["data"]["config.yml"]
    referenced = set()
    for target in yaml.safe_load(config_text)["targets"]:
        referenced.add(target.get("password_file"))
        referenced |= {target.get("tls", {}).get(k) for k in ("ca_file", "cert_file", "key_file")}
    files: dict[str, str] = {}
    for mount in container(docs)["volumeMounts"]:
        volume, base = volumes[mount["name"]], mount["mountPath"]
        if "configMap" in volume:
            for item in volume["configMap"]["items"]:
                files[f"{base}/{item['path']}"] = config_map(docs)["data"][item["key"]].replace(
                    "/etc/cache-exporter/", f"{root}/etc/cache-exporter/")
        elif "projected" in volume:
            for source in volume["projected"]["sources"]:
                for item in source["secret"]["items"]:
                    files[f"{base}/{item['path']}"] = "s3cret\n"
        elif "secret" in volume:
            items = volume["secret"].get("items")
            paths = [i["path"] for i in items] if items else \
                [p.removeprefix(base + "/") for p in referenced if p and p.startswith(base + "/")]
            for path in paths:
                files[f"{base}/{path}"] = "-----BEGIN CERTIFICATE-----\n"
    for path, content in files.items():
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_text(content)
    args = container(docs)["args"]
    (config_arg,) = [a for a in args if a.startswith("--config.file=")]
    return root / config_arg.removeprefix("--config.file=").lstrip("/")


@pytest.mark.servers
@pytest.mark.parametrize("values", VALUE_SETS, ids=VALUE_IDS)
def test_rendered_config_passes_check_config(values: Path | None, tmp_path: Path) -> None:
    """The ConfigMap's config.yml, with the files the pod mounts in place, passes
    `cache-exporter check-config`: every password_file and TLS file it names is mounted."""
    docs = render(values)
    path = pod_filesystem(docs, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "exporter", "check-config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "not readable" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr

    # Helm merges maps and replaces lists: the given config over the default one.
    def merge(base: dict, over: dict) -> dict:
        out = dict(base)
        for key, value in over.items():
            out[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) \
                else value
        return out

    given = (yaml.safe_load(values.read_text()) or {}).get("config", {}) if values else {}
    default = yaml.safe_load((CHART / "values.yaml").read_text())["config"]
    assert yaml.safe_load(config_map(docs)["data"]["config.yml"]) == merge(default, given)


@pytest.mark.servers
def test_a_missing_mount_shows_in_check_config(tmp_path: Path) -> None:
    """The check above has teeth: drop the secrets volume and check-config complains."""
    docs = render(ci("secrets"))
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    pod["containers"][0]["volumeMounts"] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] != "secrets"]
    path = pod_filesystem(docs, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "exporter", "check-config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert "sessions-redis is not readable" in proc.stdout + proc.stderr


# --- the pod ----------------------------------------------------------------------------------

@pytest.mark.servers
def test_restricted_security_context() -> None:
    docs = render()
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    sc = container(docs)["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert one(docs, "ServiceAccount")["automountServiceAccountToken"] is False
    # A writable /tmp, since the root filesystem is read-only.
    mounts = {m["mountPath"]: m for m in container(docs)["volumeMounts"]}
    assert "/tmp" in mounts
    assert "resources" not in container(docs), "no resources by default"


@pytest.mark.servers
def test_service_account() -> None:
    sa = one(render(None, "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:x"), "ServiceAccount")
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": "arn:x"}
    docs = render(None, "serviceAccount.create=false")
    assert "ServiceAccount" not in {d["kind"] for d in docs}
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "default"
    docs = render(None, "serviceAccount.create=false", "serviceAccount.name=shared")
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "shared"


@pytest.mark.servers
def test_probes_ports_and_args() -> None:
    docs = render()
    c = container(docs)
    assert c["ports"] == [{"name": "http", "containerPort": 9611, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["args"][:3] == ["run", "--config.file=/etc/cache-exporter/config/config.yml",
                             "--web.listen-address=:9611"]
    assert "--log.level=info" in c["args"] and "--log.format=logfmt" in c["args"]
    assert not any(a.startswith(("--web.config.file", "--web.enable-lifecycle")) for a in c["args"])
    assert "web-config.yml" not in config_map(docs)["data"]
    assert c["image"] == "ghcr.io/cache-exporter/cache-exporter:0.1.0"
    svc = one(docs, "Service")
    assert svc["spec"]["ports"] == [{"name": "http", "port": 9611, "targetPort": "http", "protocol": "TCP"}]
    assert svc["spec"]["selector"] == one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["config"]["mountPath"] == "/etc/cache-exporter/config" and mounts["config"]["readOnly"]

    changed = render(None, "logFormat=json", "extraArgs={--log-level=debug}",
                     "image.digest=sha256:" + "a" * 64, "livenessProbe.periodSeconds=60")
    c = container(changed)
    assert "--log.format=json" in c["args"] and c["args"][-1] == "--log-level=debug"
    assert c["image"] == "ghcr.io/cache-exporter/cache-exporter@sha256:" + "a" * 64
    assert c["livenessProbe"]["periodSeconds"] == 60 and c["livenessProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.servers
def test_forecast_state_directory_is_wired_by_default() -> None:
    """The forecast history survives a container restart: --state.dir on a mounted volume
    (emptyDir by default, any volume source when set), and neither without state.enabled."""
    docs = render(None)
    c = container(docs)
    assert "--state.dir=/var/lib/cache-exporter" in c["args"]
    assert {"name": "state", "mountPath": "/var/lib/cache-exporter"} in c["volumeMounts"]
    volumes = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"] == {"name": "state", "emptyDir": {"sizeLimit": "16Mi"}}
    claim = render_values({"state": {"volume": {"persistentVolumeClaim": {"claimName": "ce-state"}}}})
    volumes = {v["name"]: v for v in one(claim, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["state"] == {"name": "state", "persistentVolumeClaim": {"claimName": "ce-state"}}
    off = render(None, "state.enabled=false")
    assert not any(a.startswith("--state.dir") for a in container(off)["args"])
    assert all(m["name"] != "state" for m in container(off)["volumeMounts"])


@pytest.mark.servers
def test_config_checksum_rolls_the_pod_when_config_changes() -> None:
    def checksum(*sets: str) -> str | None:
        meta = one(render(None, *sets), "Deployment")["spec"]["template"]["metadata"]
        return (meta.get("annotations") or {}).get("checksum/config")

    base = checksum()
    assert base and len(base) == 64
    assert checksum() == base, "stable for the same values"
    assert checksum("config.global.interval=30s") != base
    assert checksum("config.targets[0].name=redis", "config.targets[0].type=redis",
                    "config.targets[0].url=redis://other:6379") != base
    assert checksum("replicaCount=1", "logLevel=debug") == base, "only the config moves it"
    assert checksum("rollOnConfigChange=false") is None
    annotations = one(render(None, "podAnnotations.team=web"), "Deployment")["spec"]["template"]["metadata"][
        "annotations"]
    assert annotations == {"checksum/config": base, "team": "web"}


@pytest.mark.servers
def test_secrets_are_mounted_as_files_by_reference() -> None:
    docs = render(ci("secrets"))
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    projected = volumes["secrets"]["projected"]
    assert projected["defaultMode"] == 0o440
    assert projected["sources"] == [
        {"secret": {"name": "redis-auth", "items": [{"key": "password", "path": "sessions-redis"}]}},
        {"secret": {"name": "memcached-auth", "items": [{"key": "exporter-password", "path": "fragments-memcached"}]}},
    ]
    assert pod["securityContext"]["fsGroup"] == 65532, "group-readable secret files need the fsGroup"
    mounts = {m["name"]: m for m in container(docs)["volumeMounts"]}
    assert mounts["secrets"] == {"name": "secrets", "mountPath": SECRETS_DIR, "readOnly": True}
    # Every password_file of the config is one of the mounted files.
    files = {f"{SECRETS_DIR}/{item['path']}" for src in projected["sources"] for item in src["secret"]["items"]}
    config = yaml.safe_load(config_map(docs)["data"]["config.yml"])
    used = {t["password_file"] for t in config["targets"] if "password_file" in t}
    assert used == files
    env = container(docs)["env"]
    assert env[0]["valueFrom"]["secretKeyRef"] == {"name": "catalog-redis", "key": "redis-password"}
    # No secret value, and no Secret object, anywhere in the chart's output.
    assert not [d for d in docs if d["kind"] == "Secret"]
    # Without secrets there is no secrets volume at all.
    default_pod = one(render(), "Deployment")["spec"]["template"]["spec"]
    assert "secrets" not in {v["name"] for v in default_pod["volumes"]}


@pytest.mark.servers
def test_tls_secrets_are_mounted_read_only() -> None:
    docs = render(ci("tls"))
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["tls-redis"]["secret"] == {"secretName": "redis-client-tls", "defaultMode": 0o440}
    assert volumes["tls-memcached-ca"]["secret"]["items"] == [{"key": "ca.crt", "path": "ca.pem"}]
    mounts = {m["name"]: m for m in container(docs)["volumeMounts"]}
    assert mounts["tls-redis"] == {"name": "tls-redis", "mountPath": f"{TLS_DIR}/redis", "readOnly": True}
    assert mounts["tls-memcached-ca"]["mountPath"] == f"{TLS_DIR}/memcached-ca"
    config = yaml.safe_load(config_map(docs)["data"]["config.yml"])
    assert config["targets"][0]["url"].startswith("rediss://")
    assert config["targets"][0]["tls"]["cert_file"] == f"{TLS_DIR}/redis/tls.crt"


@pytest.mark.servers
@pytest.mark.parametrize("setting, message", [
    ("password_file=/etc/cache-exporter/secrets/nope",
     'config.targets[0].password_file /etc/cache-exporter/secrets/nope: no entry named "nope" in secrets'),
    ("tls.ca_file=/etc/cache-exporter/tls/missing/ca.crt", 'no entry named "missing" in tlsSecrets'),
])
def test_dangling_secret_references_fail_the_render(setting: str, message: str) -> None:
    target = ["config.targets[0].name=r", "config.targets[0].type=redis", "config.targets[0].url=rediss://r:6379",
              f"config.targets[0].{setting}"]
    assert message in template_error(*[a for t in target for a in ("--set", t)])


@pytest.mark.servers
def test_pdb_and_network_policy() -> None:
    kinds = {d["kind"] for d in render()}
    assert not kinds & {"PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor", "PrometheusRule"}
    docs = render(ci("monitoring"))
    selector = one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    pdb = one(docs, "PodDisruptionBudget")["spec"]
    assert pdb == {"minAvailable": 1, "selector": {"matchLabels": selector}}
    assert one(render(None, "podDisruptionBudget.enabled=true"), "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    np = one(docs, "NetworkPolicy")["spec"]
    assert np["podSelector"]["matchLabels"] == selector
    assert np["policyTypes"] == ["Ingress", "Egress"]
    assert np["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert np["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"}
    dns, targets = np["egress"]
    assert {(p["port"], p["protocol"]) for p in dns["ports"]} == {(53, "UDP"), (53, "TCP")}
    # From the config: redis://...:6379, memcached [fd00::10]:11212, app :3000, https (443),
    # and the http_cache bypass origin :8080.
    assert [p["port"] for p in targets["ports"]] == [6379, 11212, 3000, 443, 8080]
    # Defaults by scheme; unix sockets need none; extra ports are appended.
    docs = render_values({
        "networkPolicy": {"enabled": True, "egress": {"ports": [{"port": 9999, "protocol": "TCP"}]}},
        "config": {"targets": [
            {"name": "a", "type": "redis", "url": "rediss://r.example"},
            {"name": "b", "type": "memcached", "address": "m.example"},
            {"name": "c", "type": "redis", "url": "unix:///run/redis.sock"},
            {"name": "d", "type": "http_cache", "urls": ["http://x.example/a", "https://y.example:8443/b"]},
        ]}})
    ports = [p["port"] for p in one(docs, "NetworkPolicy")["spec"]["egress"][1]["ports"]]
    assert ports == [6379, 11211, 80, 8443, 9999]


@pytest.mark.servers
def test_service_monitor() -> None:
    sm = one(render(ci("monitoring")), "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["metadata"]["namespace"] == "monitoring"
    assert sm["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "cache-exporter",
                                                     "app.kubernetes.io/instance": "release"}
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["monitoring"]}
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "15s" and endpoint["scrapeTimeout"] == "10s"
    assert endpoint["relabelings"] == [{"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}]
    assert endpoint["metricRelabelings"][0]["action"] == "drop"
    other_ns = one(render(None, "serviceMonitor.enabled=true", "serviceMonitor.namespace=prom"), "ServiceMonitor")
    assert other_ns["metadata"]["namespace"] == "prom"
    assert other_ns["spec"]["namespaceSelector"] == {"matchNames": ["monitoring"]}


def test_web_config_mutual_tls_and_basic_auth(tmp_path: Path, tls_files) -> None:
    """ci/web: HTTPS with mutual TLS and basic auth. The rendered web config is one the exporter
    accepts (with the Secret's files where the pod mounts them), the probes become TCP checks (kubelet
    has no client certificate), and the ServiceMonitor scrapes over HTTPS with the given credentials."""
    from exporter.webconfig import parse

    values = yaml.safe_load(ci("web").read_text())
    docs = render(ci("web"))
    c = container(docs)
    assert "--web.config.file=/etc/cache-exporter/config/web-config.yml" in c["args"]
    assert "--web.enable-lifecycle" in c["args"]
    assert c["livenessProbe"]["tcpSocket"] == {"port": "http"} and "httpGet" not in c["livenessProbe"]
    assert c["readinessProbe"]["tcpSocket"] == {"port": "http"}
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "web-tls", "secret": {"secretName": "cache-exporter-web-tls", "defaultMode": 0o440}} \
        in pod["volumes"]
    assert {"name": "web-tls", "mountPath": "/etc/cache-exporter/web-tls", "readOnly": True} in c["volumeMounts"]
    (config_volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
    assert {"key": "web-config.yml", "path": "web-config.yml"} in config_volume["configMap"]["items"]

    web_dir = tmp_path / "web-tls"
    web_dir.mkdir()
    for src, name in ((tls_files.server_cert, "tls.crt"), (tls_files.server_key, "tls.key"), (tls_files.ca, "ca.crt")):
        shutil.copy(src, web_dir / name)
    text = config_map(docs)["data"]["web-config.yml"].replace("/etc/cache-exporter/web-tls", str(web_dir))
    (tmp_path / "web-config.yml").write_text(text)
    web = parse(str(tmp_path / "web-config.yml"))
    assert web.tls is not None and web.tls.verify_mode == ssl.CERT_REQUIRED
    assert web.tls.minimum_version == ssl.TLSVersion.TLSv1_3
    assert bcrypt.checkpw(b"example-password", web.users["prometheus"])
    assert web.headers == [("Strict-Transport-Security", "max-age=31536000")]

    (endpoint,) = one(docs, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"] == values["serviceMonitor"]["tlsConfig"]
    assert endpoint["basicAuth"] == values["serviceMonitor"]["basicAuth"]


@pytest.mark.servers
def test_web_tls_without_client_auth_defaults() -> None:
    docs = render(None, "web.tls.enabled=true", "web.tls.existingSecret=web-cert", "serviceMonitor.enabled=true")
    c = container(docs)
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http", "scheme": "HTTPS"}
    assert c["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    (endpoint,) = one(docs, "ServiceMonitor")["spec"]["endpoints"]
    assert endpoint["scheme"] == "https" and "basicAuth" not in endpoint
    assert endpoint["tlsConfig"] == {"ca": {"secret": {"name": "web-cert", "key": "ca.crt"}},
                                     "serverName": "release-cache-exporter.monitoring.svc"}
    web = yaml.safe_load(config_map(docs)["data"]["web-config.yml"])
    assert web == {"tls_server_config": {"cert_file": "/etc/cache-exporter/web-tls/tls.crt",
                                         "key_file": "/etc/cache-exporter/web-tls/tls.key", "min_version": "TLS12"}}


@pytest.mark.servers
def test_web_config_from_a_secret() -> None:
    """The whole web config (basic-auth hashes included) from an existing Secret, nothing of it in the ConfigMap."""
    docs = render(None, "web.configSecret.name=exporter-web", "web.configSecret.key=web.yml",
                  "web.tls.enabled=true", "web.tls.existingSecret=web-cert")
    c = container(docs)
    assert "--web.config.file=/etc/cache-exporter/web/web-config.yml" in c["args"]
    assert "web-config.yml" not in config_map(docs)["data"]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert {"name": "web-config", "secret": {"secretName": "exporter-web", "defaultMode": 0o440,
                                             "items": [{"key": "web.yml", "path": "web-config.yml"}]}} in pod["volumes"]
    assert {"name": "web-config", "mountPath": "/etc/cache-exporter/web", "readOnly": True} in c["volumeMounts"]
    assert c["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"


@pytest.mark.servers
@pytest.mark.parametrize("sets,message", [
    (("web.tls.enabled=true",), "set web.tls.existingSecret"),
    (("web.configSecret.name=x",), "needs both name and key"),
    (("web.configSecret.name=x", "web.configSecret.key=k", "web.headers.X-Frame-Options=deny"),
     "replaces the rendered web config"),
    (("serviceMonitor.enabled=true", "web.basicAuthUsers.prom=$2y$10$" + "a" * 53), "serviceMonitor.basicAuth"),
])
def test_web_settings_that_cannot_work_fail_the_render(sets: tuple[str, ...], message: str) -> None:
    assert message in template_error(*[a for s in sets for a in ("--set", s)])


# --- the alert rules ----------------------------------------------------------------------------

def source_groups() -> list[dict]:
    return yaml.safe_load(sync.RULES_SOURCE.read_text())["groups"]


def rules_by(groups: list[dict], alert: str) -> list[dict]:
    return [r for g in groups for r in g["rules"] if r.get("alert") == alert]


def test_chart_copies_are_identical_to_their_sources() -> None:
    """One source of truth: alerts/ and dashboards/ are copied byte for byte (helm/sync.py)."""
    assert sync.RULES_COPY.read_bytes() == sync.RULES_SOURCE.read_bytes(), "run: python helm/sync.py"
    assert sync.stale_copies() == [], "run: python helm/sync.py"
    sources = {p.name for p in (REPO / "dashboards").glob("*.json")}
    copies = {p.name for p in sync.DASHBOARDS_COPY.glob("*.json")}
    assert copies == sources


@pytest.mark.servers
def test_prometheus_rule_without_changes_is_the_rules_file() -> None:
    rule = one(render(None, "prometheusRule.enabled=true"), "PrometheusRule")
    assert rule["spec"]["groups"] == source_groups()


@pytest.mark.servers
def test_prometheus_rule_disable_override_and_labels() -> None:
    docs = render(ci("monitoring"))
    rule = one(docs, "PrometheusRule")
    groups = rule["spec"]["groups"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rules_by(groups, "CacheWatchdog") == [], "disabled alert is gone"
    (unset,) = rules_by(groups, "CacheMemoryLimitUnset")
    assert unset["for"] == "1h" and unset["labels"]["severity"] == "info"
    info, warning, critical = rules_by(groups, "CacheMemoryExhaustionPredicted")
    assert (warning["labels"]["severity"], warning["for"]) == ("warning", "1h")
    assert (critical["labels"]["severity"], critical["for"]) == ("critical", "2m"), "the other severity is untouched"
    assert (info["labels"]["severity"], info["for"]) == ("info", "15m")
    every = [r for g in groups for r in g["rules"]]
    assert every and all(r["labels"]["team"] == "platform" for r in every)
    assert all(r["annotations"]["runbook_url"] == "https://runbooks.example.com/cache-exporter#"
               + r["alert"].lower() for r in every)
    # Everything else is the file's.
    source = [r for g in source_groups() for r in g["rules"]]
    assert len(every) == len(source) - 1
    untouched = [r for r in every if r["alert"] not in {"CacheMemoryLimitUnset", "CacheMemoryExhaustionPredicted"}]
    for r in untouched:
        (orig,) = [s for s in source if s["alert"] == r["alert"] and s["labels"] == {
            k: v for k, v in r["labels"].items() if k != "team"}]
        assert r["expr"] == orig["expr"] and r.get("for") == orig.get("for")


@pytest.mark.servers
def test_prometheus_rule_per_severity_disable_and_keep_firing_for() -> None:
    groups = one(render_values({"prometheusRule": {
        "enabled": True,
        "disabled": {"CacheResidentMemoryNearHardLimit/warning": True, "CacheTargetDown": False},
        "overrides": {"CacheTargetDown": {"keep_firing_for": "10m"}},
    }}), "PrometheusRule")["spec"]["groups"]
    assert [r["labels"]["severity"] for r in rules_by(groups, "CacheResidentMemoryNearHardLimit")] == ["critical"]
    (down,) = rules_by(groups, "CacheTargetDown")
    assert down["keep_firing_for"] == "10m" and down["for"] == "5m"


@pytest.mark.servers
@pytest.mark.parametrize("key", ["disabled.CacheMemoryFull", "overrides.CacheTargetDown/warning.for"])
def test_prometheus_rule_unknown_alert_names_fail(key: str) -> None:
    value = "true" if key.startswith("disabled") else "1m"
    err = template_error("--set", "prometheusRule.enabled=true", "--set", f"prometheusRule.{key}={value}")
    assert "no such alert" in err and "CacheTargetDown/critical" in err, err


@pytest.mark.servers
def test_prometheus_templates_in_annotations_come_through_verbatim() -> None:
    """The rules file is parsed (fromYaml/toYaml), never passed through tpl: Helm does not
    evaluate the Prometheus templates in the annotations."""
    text = _render(None, ("prometheusRule.enabled=true",), CHART)
    rule = one([d for d in yaml.safe_load_all(text) if d], "PrometheusRule")
    rendered = {(r["alert"], r["labels"]["severity"]): r["annotations"] for g in rule["spec"]["groups"]
                for r in g["rules"]}
    source = {(r["alert"], r["labels"]["severity"]): r["annotations"] for g in source_groups() for r in g["rules"]}
    assert rendered == source
    (summary,) = {a["summary"] for (name, _), a in rendered.items() if name == "CacheTargetDown"}
    assert summary == "{{ $labels.target }} cannot be polled"
    assert "{{ $labels.target }}" in text and "{{ $value | humanizeDuration }}" in text


@pytest.mark.servers
def test_rendered_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    need(promtool is not None, "promtool (Debian package prometheus)")
    rule = one(render(ci("monitoring")), "PrometheusRule")
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- dashboards ---------------------------------------------------------------------------------

def dashboard_maps(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["kind"] == "ConfigMap" and "grafana_dashboard" in d["metadata"]["labels"]]


@pytest.mark.servers
def test_dashboard_configmaps_hold_every_dashboard() -> None:
    docs = render(ci("monitoring"))
    maps = dashboard_maps(docs)
    sources = sorted((REPO / "dashboards").glob("*.json"))
    assert len(maps) == len(sources)
    by_key = {key: (cm, value) for cm in maps for key, value in cm["data"].items()}
    assert set(by_key) == {p.name for p in sources}
    for source in sources:
        cm, text = by_key[source.name]
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"] == {"grafana_folder": "Caches"}
        assert json.loads(text) == json.loads(source.read_text())
        assert text == source.read_text(), "the ConfigMap holds the file as it is"
    assert not dashboard_maps(render()), "off by default"


@pytest.fixture(scope="module")
def chart_with_fixture_dashboards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the chart with two small dashboards, so the template is tested whatever
    dashboards/ holds; Grafana's own ${...} and {{...}} syntax must pass through untouched."""
    chart = tmp_path_factory.mktemp("chart") / "cache-exporter"
    shutil.copytree(CHART, chart)
    dash = chart / "files" / "dashboards"
    shutil.rmtree(dash, ignore_errors=True)
    dash.mkdir(parents=True)
    for uid in ("cache-overview", "redis_detail"):
        (dash / f"{uid}.json").write_text(json.dumps({
            "uid": uid, "title": uid, "schemaVersion": 39,
            "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
            "panels": [{"type": "timeseries", "datasource": {"type": "prometheus", "uid": "${datasource}"},
                        "targets": [{"expr": 'cache_memory_used_bytes{target=~"$target"}',
                                     "legendFormat": "{{target}}"}]}],
        }, indent=2) + "\n")
    return chart


@pytest.mark.servers
def test_dashboard_configmap_template(chart_with_fixture_dashboards: Path) -> None:
    chart = chart_with_fixture_dashboards
    docs = render(None, "dashboards.enabled=true", "dashboards.namespace=grafana", chart=chart)
    maps = dashboard_maps(docs)
    assert [cm["metadata"]["name"] for cm in maps] == ["release-cache-exporter-dashboard-cache-overview",
                                                       "release-cache-exporter-dashboard-redis-detail"]
    for cm in maps:
        assert cm["metadata"]["namespace"] == "grafana"
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["labels"]["app.kubernetes.io/name"] == "cache-exporter"
        assert cm["metadata"]["annotations"] == {"grafana_folder": "Cache exporter"}
        ((key, text),) = cm["data"].items()
        assert text == (chart / "files" / "dashboards" / key).read_text()
        panel = json.loads(text)["panels"][0]
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"][0]["legendFormat"] == "{{target}}"
    kv = kubernetes_validate()
    for cm in maps:
        kv.validate(cm, KUBE_VERSION, strict=True)
    custom = render(None, "dashboards.enabled=true", "dashboards.labels.grafana_dashboard=null",
                    "dashboards.labels.team-dashboards=yes", chart=chart)
    custom_maps = [cm for cm in custom
                   if cm["kind"] == "ConfigMap" and cm["metadata"]["name"].endswith(("overview", "detail"))]
    assert len(custom_maps) == 2
    assert all(cm["metadata"]["labels"].get("team-dashboards") == "yes" for cm in custom_maps)
    assert all("grafana_dashboard" not in cm["metadata"]["labels"] for cm in custom_maps)


# --- sharding: a StatefulSet of shards --------------------------------------------------------------

@pytest.mark.servers
def test_sharding_renders_a_statefulset_of_shards_behind_one_headless_service() -> None:
    kv = kubernetes_validate()
    docs = render(None, *SHARDED, "extraEnv[0].name=TZ", "extraEnv[0].value=UTC")
    assert not [d for d in docs if d["kind"] == "Deployment"]
    sts = one(docs, "StatefulSet")
    svc = one(docs, "Service")
    for doc in (sts, svc):
        kv.validate(doc, KUBE_VERSION, strict=True)
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"] == "release-cache-exporter"
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    c = sts["spec"]["template"]["spec"]["containers"][0]
    assert [a for a in c["args"] if "shard" in a] == ["--total-shards=3", "--shard=auto"]
    # --shard=auto reads the ordinal from POD_NAME (<fullname>-N); the user's env follows it.
    assert c["env"] == [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {"name": "TZ", "value": "UTC"}]
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    # Exactly one ServiceMonitor, selecting the one Service (so every pod once, never twice).
    sm = one(docs, "ServiceMonitor")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Service"] == ["release-cache-exporter"]
    lint = run_helm("lint", "--strict", *(a for s in SHARDED for a in ("--set", s)))
    assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.servers
def test_sharding_off_by_default_and_the_ordinal_becomes_the_shard(tmp_path: Path) -> None:
    docs = render()
    assert one(docs, "Deployment")["spec"]["replicas"] == 1 and not [d for d in docs if d["kind"] == "StatefulSet"]
    c = container(docs)
    assert "env" not in c and not any("shard" in a for a in c["args"])
    assert "clusterIP" not in one(docs, "Service")["spec"]
    # The args a shard pod gets pass the exporter's own flag parsing with its pod name.
    from exporter.sharding import from_flags
    args = one(render(None, *SHARDED), "StatefulSet")["spec"]["template"]["spec"]["containers"][0]["args"]
    flags = dict(a.removeprefix("--").split("=", 1) for a in args if "shard" in a)
    shards = {from_flags(flags["shard"], int(flags["total-shards"]), {"POD_NAME": f"release-cache-exporter-{n}"})
              for n in range(3)}
    assert {(s.index, s.total) for s in shards} == {(0, 3), (1, 3), (2, 3)}
    assert "/sharding/replicas': minimum" in template_error("--set", "sharding.replicas=0")
    notes = run_helm("install", "--dry-run=client", "--namespace", "monitoring", "--generate-name", *(
        a for s in SHARDED for a in ("--set", s)))
    assert notes.returncode == 0 and "pod N polls only the targets" in notes.stdout, notes.stderr


# --- NOTES, values documentation, schema ------------------------------------------------------

@pytest.mark.servers
def test_notes_say_how_to_reach_it_and_what_it_polls() -> None:
    proc = run_helm("install", "--dry-run=client", "--namespace", "monitoring", "--generate-name",
                    "-f", str(ci("monitoring")), "--set", "replicaCount=2")
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    assert "port-forward service/" in notes and "/metrics" in notes and "/targets" in notes
    for name in ("sessions (redis, redis://redis.example.svc:6379)", "fragments (memcached", "backend (app",
                 "edge (http_cache"):
        assert name in notes, notes
    assert "every replica polls every target" in notes


def test_every_value_is_documented_in_the_readme_and_the_schema() -> None:
    assert sync.undocumented() == []
    documented = [d.path for d in sync.values_docs()]
    readme = (CHART / "README.md").read_text()
    assert sync.readme_with_table(readme) == readme, "README values table is stale: run python helm/sync.py"
    table = readme[readme.index(sync.TABLE_START):readme.index(sync.TABLE_END)]
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for leaf in sync.leaves(values):
        owner = leaf if leaf in documented else next(d for d in documented if leaf.startswith(d + "."))
        assert f"| `{owner}` |" in table, leaf
        assert sync.schema_node(schema, owner) is not None, f"{owner} is not in values.schema.json"
    # The top level and the main objects accept no unknown keys.
    assert schema["additionalProperties"] is False
    for key in ("image", "serviceAccount", "service", "serviceMonitor", "prometheusRule", "dashboards",
                "podDisruptionBudget", "networkPolicy", "config", "sharding"):
        assert schema["properties"][key]["additionalProperties"] is False, key
    assert set(schema["properties"]) == set(values)


def test_the_documentation_check_catches_an_undocumented_key() -> None:
    text = (CHART / "values.yaml").read_text()
    assert "  # -- Scrape timeout; empty: Prometheus' default.\n" in text
    assert sync.undocumented(text.replace("  # -- Scrape timeout; empty: Prometheus' default.\n", "")) == [
        "serviceMonitor.scrapeTimeout"]
    assert sync.undocumented(text + "newKey:\n  nested: 1\n") == ["newKey.nested"]


def test_schema_target_types_follow_the_exporter() -> None:
    from exporter import config

    schema = json.loads((CHART / "values.schema.json").read_text())
    types = schema["properties"]["config"]["properties"]["targets"]["items"]["properties"]["type"]["enum"]
    assert sorted(types) == sorted(config.KINDS)
