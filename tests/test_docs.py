"""The docs stay true: quick start, generated metrics reference and audit table, config keys,
compatibility tables, failure reasons, and every relative link and #anchor in README.md and docs/."""

from __future__ import annotations

import re

import pytest
from conftest import REPO
from test_alert_rules import runbook_sections

import exporter.config as config_module
from exporter import catalog, errors
from exporter.docs import AUDIT_FILE, METRICS_FILE, failure_reasons, metrics_reference

README = (REPO / "README.md").read_text()
DOCS = REPO / "docs"
METRICS = (REPO / METRICS_FILE).read_text()
AUDIT = (REPO / AUDIT_FILE).read_text()
CONFIGURATION = (DOCS / "configuration.md").read_text()
COMPATIBILITY = (DOCS / "compatibility.md").read_text()
# Families redis_exporter 1.45 (Debian bookworm) exposes against Redis 7.0.
REDIS_EXPORTER_FAMILIES = REPO / "tests" / "fixtures" / "redis_exporter_1.45_families.txt"


def test_readme_opens_with_two_command_quick_start():
    first_section = README.split("\n## ", 2)[1]
    assert first_section.startswith("Quick start")
    block = re.search(r"```sh\n(.*?)```", first_section, re.S).group(1)
    assert block.strip().splitlines() == ["make demo", "make test"]


def test_metrics_reference_is_generated_and_current():
    assert metrics_reference() in METRICS, f"{METRICS_FILE} is stale: run `make docs`"
    for spec in catalog.families():
        assert f"`{spec.name}`" in METRICS


def test_every_config_key_is_documented():
    keys = {f"global.{k}" for k in ("interval", "timeout", "labels", "forecast_window", "max_reply_size",
                                    "max_series", "max_label_value_length")}
    keys |= {f"targets[].{k}" for k in config_module.COMMON_KEYS}
    for kind in config_module.KINDS.values():
        keys |= {f"targets[].{k}" for k in kind.keys}
    keys |= {f"targets[].tls.{k}" for k in ("ca_file", "cert_file", "key_file", "server_name",
                                             "insecure_skip_verify")}
    table = CONFIGURATION.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    missing = [k for k in sorted(keys) if f"`{k}`" not in table]
    assert not missing, missing
    discovery = (DOCS / "discovery.md").read_text()
    missing = [k for k in sorted(config_module.DISCOVERY_KEYS) if f"`targets[].{k}`" not in discovery]
    assert not missing, missing


@pytest.mark.parametrize("peer,fixture,prefix", [
    ("redis_exporter", REDIS_EXPORTER_FAMILIES, "redis_"),
    ("memcached_exporter", REPO / "tests" / "fixtures" / "memcached_exporter_0.16_families.txt", "memcached_"),
])
def test_peer_families_are_emitted_or_explained(peer, fixture, prefix):
    theirs = [ln.strip() for ln in fixture.read_text().splitlines() if ln.startswith(prefix)]
    ours = {s.name for s in catalog.families()}
    differences = COMPATIBILITY.split(f"## Differences from {peer}", 1)[1].split("\n## ", 1)[0]
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

    assert audit_checks() in AUDIT, f"{AUDIT_FILE} is stale: run `make docs`"
    assert all(f"`{c.name}`" in AUDIT for c in CHECKS)


def test_every_alert_is_in_the_alerts_table():
    import yaml

    rules = yaml.safe_load((REPO / "alerts" / "cache-exporter.rules.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    table = set(re.findall(r"^\| `([A-Za-z]+)` \|", (DOCS / "alerts.md").read_text(), re.M))
    assert names == table


def test_every_failure_reason_is_documented():
    table = METRICS.split("## Failure reasons", 1)[1]
    documented = re.findall(r"^\| `([a-z_]+)` \|", table, re.M)
    assert sorted(documented) == sorted(errors.REASONS)
    assert failure_reasons() in METRICS, f"{METRICS_FILE} is stale: run `make docs`"
    poll_errors = next(s for s in catalog.families() if s.name == "cache_exporter_poll_errors_total")
    assert all(f"{reason}," in poll_errors.help or f"{reason})" in poll_errors.help for reason in errors.REASONS)


# [text](target), outside code spans; images too. Reference-style links are not used in these docs.
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _links(markdown: str) -> list[str]:
    """Link targets outside fenced code blocks and inline code."""
    out, fence = [], None
    for line in markdown.splitlines():
        if m := re.match(r"^\s{0,3}(`{3,}|~{3,})", line):
            fence = m.group(1)[0] if fence is None else (None if m.group(1)[0] == fence else fence)
            continue
        if fence is None:
            out += _LINK.findall(re.sub(r"`[^`]*`", "", line))
    return out


def broken_links(path, repo=REPO) -> list[str]:
    """Relative links in ``path`` whose file (inside ``repo``) or #anchor does not exist."""
    problems = []
    for target in _links(path.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:: not checked offline
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if repo.resolve() not in dest.parents and dest != repo.resolve():
            problems.append(f"{target}: outside the repository")
        elif not dest.exists():
            problems.append(f"{target}: no such file")
        elif anchor and (dest.suffix != ".md" or anchor not in runbook_sections(dest.read_text())):
            problems.append(f"{target}: no heading with that anchor")
    return problems


def test_broken_links_are_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A\n## Two words\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/a.md#two-words) [self](#b) `[code](nowhere.md)`\n## B\n"
                    "[gone](docs/b.md) [anchor](docs/a.md#three) [out](../x.md) [web](https://example.com/#z)\n"
                    "```\n[fenced](nowhere.md)\n```\n")
    assert broken_links(page, tmp_path) == ["docs/b.md: no such file", "docs/a.md#three: no heading with that anchor",
                                            "../x.md: outside the repository"]


@pytest.mark.parametrize("name", ["README.md", "helm/cache-exporter/README.md", "dashboards/README.md",
                                  "benchmarks/README.md"] + sorted(f"docs/{p.name}" for p in DOCS.glob("*.md")))
def test_relative_links_and_anchors_resolve(name):
    assert broken_links(REPO / name) == []


def test_docs_index_lists_every_page():
    index = (DOCS / "README.md").read_text()
    linked = {t.partition("#")[0] for t in _links(index)}
    missing = sorted(p.name for p in DOCS.glob("*.md") if p.name != "README.md" and p.name not in linked)
    assert not missing, f"docs/README.md does not link {missing}"


def test_no_reference_to_files_outside_the_repository():
    # A design document that lived beside the repository once was cited from code and tests.
    tracked = [p for d in ("exporter", "tests", "alerts", "dashboards", "helm", "tools", "benchmarks", "docs")
               for p in (REPO / d).rglob("*") if p.suffix in (".py", ".md", ".yaml", ".yml")
               and "node_modules" not in p.parts]
    offenders = [str(p.relative_to(REPO)) for p in tracked + [REPO / "README.md"]
                 if re.search(r"design\.md|\.\./shared", p.read_text(errors="replace"))
                 and p.name != "test_docs.py"]
    assert not offenders, offenders
