"""The Dockerfile and the local stack (examples/stack), tested without a Docker engine.

No engine runs here, so the image is never built. What can be checked is: the Dockerfile's
structure (multi-stage, non-root, no build tools in the final stage, EXPOSE, HEALTHCHECK), its
install step replayed in a clean venv from exactly the files it COPYs, its HEALTHCHECK command
run against a live exporter, and every file the compose stack mounts, validated with the same
tools the containers run (promtool, amtool, cache-exporter check-config).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, need

DOCKERFILE = REPO / "Dockerfile"
STACK = REPO / "examples" / "stack"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def test_dockerfile_is_multi_stage_non_root_and_minimal() -> None:
    build, final = stages()
    assert " AS build" in build[0][1]
    final_words = {word for word, _ in final}
    assert "RUN" not in final_words, "the final stage must not install anything (no build tools, no apt)"
    assert ("COPY", "--from=build /opt/cache-exporter /opt/cache-exporter") in final
    user = next(args for word, args in final if word == "USER")
    assert re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", user), "numeric non-root user (runAsNonRoot can verify it)"
    assert ("EXPOSE", "9611") in final
    health = next(args for word, args in final if word == "HEALTHCHECK")
    assert "/healthz" in health and "CMD" in health
    entry = json.loads(next(args for word, args in final if word == "ENTRYPOINT"))
    assert entry == ["cache-exporter"]
    cmd = json.loads(next(args for word, args in final if word == "CMD"))
    assert cmd[:3] == ["run", "--config.file", "/etc/cache-exporter/config.yml"]
    # The forecast history survives a restart: a state directory owned by the runtime user, on a volume.
    assert cmd[cmd.index("--state.dir") + 1] == "/var/lib/cache-exporter"
    assert ("COPY", "--from=build --chown=" + user + " /state /var/lib/cache-exporter") in final
    assert ("VOLUME", "/var/lib/cache-exporter") in final
    assert ("COPY", "examples/config.yml /etc/cache-exporter/config.yml") in final
    for word, args in build:
        if word == "RUN":
            assert "apt-get" not in args and "gcc" not in args, "wheels only: no compiler anywhere"


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".venv", ".git", ".cache", "tests"} <= ignored


@pytest.mark.servers
def test_install_step_works_in_a_clean_venv_from_the_copied_files(tmp_path: Path) -> None:
    """Replay the build stage: COPY exactly what it copies, RUN its install with the venv moved."""
    build, _ = stages()
    context = tmp_path / "src"
    context.mkdir()
    for word, args in build:
        if word == "COPY":
            *sources, dest = args.split()
            assert dest.startswith("./"), "build-stage COPYs go to the WORKDIR"
            for source in sources:
                origin = REPO / source
                target = context / dest / source if dest.endswith("/") else context / dest
                if origin.is_dir():
                    shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(origin, target)
    venv = tmp_path / "opt-cache-exporter"
    run = next(args for word, args in build if word == "RUN").replace("/opt/cache-exporter", str(venv))
    run = run.replace("python -m venv", f"{sys.executable} -m venv", 1)
    result = subprocess.run(["bash", "-euc", run], cwd=context, capture_output=True, text=True, timeout=600,
                            env={"PATH": "/usr/bin:/bin", "PIP_NO_CACHE_DIR": "1", "HOME": str(tmp_path),
                                 **{k: v for k, v in __import__("os").environ.items()
                                    if k.startswith("PIP_") or k.endswith("_CA_BUNDLE") or k == "SSL_CERT_FILE"}})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "cache-exporter 0.1.0" in result.stdout
    check = subprocess.run([str(venv / "bin" / "cache-exporter"), "check-config", str(REPO / "examples/config.yml")],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    # Nothing a test or a benchmark needs leaked into the image's environment.
    installed = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "list", "--format=json"],
                               capture_output=True, text=True, timeout=60)
    names = {p["name"].lower() for p in json.loads(installed.stdout)}
    assert not names & {"pytest", "hypothesis", "django", "grafana-foundation-sdk"}


def test_healthcheck_command_passes_against_a_live_exporter(exporter_factory) -> None:
    _, final = stages()
    health = next(args for word, args in final if word == "HEALTHCHECK")
    argv = json.loads(health.split("CMD", 1)[1].strip())
    ep = exporter_factory(None, wait_ready=False)
    argv = [sys.executable if a == "python" else a.replace("127.0.0.1:9611", f"127.0.0.1:{ep.port}") for a in argv]
    assert subprocess.run(argv, timeout=30).returncode == 0
    ep.stop()
    assert subprocess.run(argv, capture_output=True, timeout=30).returncode != 0


# --- the compose stack ---------------------------------------------------------------

def compose() -> dict:
    return yaml.safe_load((STACK / "docker-compose.yml").read_text())


def test_stack_has_every_service_and_every_mounted_file_exists() -> None:
    services = compose()["services"]
    assert set(services) == {"redis", "memcached", "cache-exporter", "prometheus", "alertmanager", "grafana"}
    assert services["cache-exporter"]["build"]["context"] == "../.."
    assert (STACK / "../.." / "Dockerfile").resolve() == DOCKERFILE
    named = set(compose().get("volumes") or {})
    for name, service in services.items():
        for volume in service.get("volumes", []):
            host = volume.split(":", 1)[0]
            if host in named:  # a named volume (the exporter's state), not a file of the repository
                continue
            assert (STACK / host).exists(), f"{name} mounts {host}, which does not exist"


@pytest.mark.servers
def test_stack_exporter_config_is_valid() -> None:
    result = subprocess.run([sys.executable, "-m", "exporter", "check-config", str(STACK / "cache-exporter.yml")],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "3 targets" in result.stdout


@pytest.mark.servers
def test_stack_prometheus_config_and_rules_are_valid(tmp_path: Path) -> None:
    need(shutil.which("promtool") is not None, "promtool (Debian package prometheus)")
    config = yaml.safe_load((STACK / "prometheus.yml").read_text())
    mounts = dict(v.split(":")[1::-1] for v in compose()["services"]["prometheus"]["volumes"])
    # Point the in-container rule path at the file the stack mounts there.
    config["rule_files"] = [str((STACK / mounts[path]).resolve()) for path in config["rule_files"]]
    assert config["scrape_configs"][0]["static_configs"][0]["targets"] == ["cache-exporter:9611"]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.servers
def test_stack_alertmanager_config_is_valid() -> None:
    need(shutil.which("amtool") is not None, "amtool (Debian package prometheus-alertmanager)")
    host = compose()["services"]["alertmanager"]["volumes"][0].split(":")[0]
    result = subprocess.run(["amtool", "check-config", str(STACK / host)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_stack_grafana_provisions_the_shipped_dashboards() -> None:
    volumes = compose()["services"]["grafana"]["volumes"]
    mounts = {v.split(":")[1]: STACK / v.split(":")[0] for v in volumes}
    provisioning = mounts["/etc/grafana/provisioning"]
    datasource = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())["datasources"][0]
    assert (datasource["type"], datasource["url"]) == ("prometheus", "http://prometheus:9090")
    provider = yaml.safe_load((provisioning / "dashboards/cache-exporter.yml").read_text())["providers"][0]
    dashboards_dir = mounts[provider["options"]["path"]]
    assert dashboards_dir.resolve() == (REPO / "dashboards").resolve()
    files = sorted(dashboards_dir.glob("*.json"))
    assert files, "the stack provisions dashboards/*.json"
    for path in files:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and "__inputs" not in dashboard, path.name
