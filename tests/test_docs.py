"""The docs stay true: quick start, generated metrics reference, config keys, compatibility table."""

from __future__ import annotations

import re

import pytest
from conftest import REPO

import exporter.config as config_module
from exporter import catalog
from exporter.docs import metrics_reference

README = (REPO / "README.md").read_text()
# Families redis_exporter 1.45 (Debian bookworm) exposes against Redis 7.0.
REDIS_EXPORTER_FAMILIES = REPO / "tests" / "fixtures" / "redis_exporter_1.45_families.txt"


def test_readme_opens_with_two_command_quick_start():
    first_section = README.split("\n## ", 2)[1]
    assert first_section.startswith("Quick start")
    block = re.search(r"```sh\n(.*?)```", first_section, re.S).group(1)
    assert block.strip().splitlines() == ["make demo", "make test"]


def test_metrics_reference_is_generated_and_current():
    assert metrics_reference() in README, "README metrics reference is stale: run `make docs`"
    for spec in catalog.families():
        assert f"`{spec.name}`" in README


def test_every_config_key_is_documented():
    keys = {f"global.{k}" for k in ("interval", "timeout", "labels", "forecast_window", "max_reply_size",
                                    "max_series", "max_label_value_length")}
    keys |= {f"targets[].{k}" for k in config_module._COMMON_KEYS}
    for kind in config_module._KINDS.values():
        keys |= {f"targets[].{k}" for k in kind.keys}
    keys |= {f"targets[].tls.{k}" for k in ("ca_file", "cert_file", "key_file", "server_name",
                                             "insecure_skip_verify")}
    table = README.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    missing = [k for k in sorted(keys) if f"`{k}`" not in table]
    assert not missing, missing


@pytest.mark.parametrize("peer,fixture,prefix", [
    ("redis_exporter", REDIS_EXPORTER_FAMILIES, "redis_"),
    ("memcached_exporter", REPO / "tests" / "fixtures" / "memcached_exporter_0.16_families.txt", "memcached_"),
])
def test_peer_families_are_emitted_or_explained(peer, fixture, prefix):
    theirs = [ln.strip() for ln in fixture.read_text().splitlines() if ln.startswith(prefix)]
    ours = {s.name for s in catalog.families()}
    differences = README.split(f"## Differences from {peer}", 1)[1].split("\n## ", 1)[0]
    for name in theirs:
        if name in ours:
            continue
        prefix_explained = name.startswith(f"{peer}_") and f"`{peer}_*`" in differences
        assert prefix_explained or f"`{name}`" in differences, f"{name} neither emitted nor explained"
    # Every replacement the table names exists.
    for row in differences.splitlines():
        if row.startswith(f"| `{prefix}") and "same with" not in row and "not exported" not in row:
            replacement = row.split("|")[2]
            for new in re.findall(r"`([a-z_*]+)`", replacement):
                assert new.endswith("*") or new in ours, new
    same = sum(1 for n in theirs if n in ours)
    assert f"{same} have the same name" in differences


def test_ci_runs_make_test():
    run = (REPO / ".ci" / "run").read_text()
    assert "make test" in run and "set -e" in run
    makefile = (REPO / "Makefile").read_text()
    for target in ("demo:", "test:", "lint:", "bench:"):
        assert f"\n{target}" in makefile


def test_audit_checks_table_is_generated_and_current():
    from exporter.audit import CHECKS
    from exporter.docs import audit_checks

    assert audit_checks() in README, "README audit checks are stale: run `make docs`"
    assert all(f"`{c.name}`" in README for c in CHECKS)
