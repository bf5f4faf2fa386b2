"""The alert rules: valid, tested with promtool, generated, conventional, documented, scalable.

alerts/build_rules.py is the single source of alerts/cache-exporter.rules.yml; the promtool unit
tests live in alerts/tests/ (``*.test.yml``; other YAML there, such as peer.rules.yml, are extra
rule files those tests load).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO, load_script, need

ALERTS = REPO / "alerts"
RULES_FILE = ALERTS / "cache-exporter.rules.yml"
TESTS_DIR = ALERTS / "tests"
RUNBOOKS = REPO / "docs" / "runbooks.md"
PROMTOOL = shutil.which("promtool")

NAME_RE = re.compile(r"^(Cache|Redis|Memcached|App)(?:[A-Z][a-z0-9]*)+$")
SEVERITIES = {"critical", "warning", "info"}
RUNBOOK_SECTION_WORDS = ("Meaning", "Impact", "Diagnosis", "Mitigation")


build_rules = load_script(ALERTS / "build_rules.py")
BUILT = build_rules.build()
RULES = [rule for group in BUILT["groups"] for rule in group["rules"]]
ALERT_NAMES = sorted({rule["alert"] for rule in RULES if "alert" in rule})


def _yaml_files() -> list[Path]:
    return sorted(TESTS_DIR.glob("*.yml")) + sorted(TESTS_DIR.glob("*.yaml"))


def _is_test_file(path: Path) -> bool:
    return isinstance(doc := yaml.safe_load(path.read_text()), dict) and "tests" in doc


TEST_FILES = [p for p in _yaml_files() if _is_test_file(p)]


def promtool(*args: str) -> subprocess.CompletedProcess:
    need(PROMTOOL is not None, "promtool not installed (Debian package prometheus)")
    return subprocess.run([PROMTOOL, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def seconds(text: str) -> float:
    """A Prometheus duration (``1h30m``, ``500ms``) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(int(n) * units[u] for n, u in parts)


# --- (a) promtool check rules -----------------------------------------------------------------

@pytest.mark.servers
def test_rules_pass_promtool_check_with_all_lints():
    result = promtool("check", "rules", "--lint=all", "--lint-fatal", str(RULES_FILE.relative_to(REPO)))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert result.stderr == "", output
    lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    assert lines == [f"Checking {RULES_FILE.relative_to(REPO)}", f"SUCCESS: {len(RULES)} rules found"], output


# --- (b) promtool test rules, one test per file ---------------------------------------------------

def test_alert_tests_exist_and_every_yaml_file_is_used():
    assert TEST_FILES, f"no promtool test files in {TESTS_DIR}"
    loaded = set()
    for path in TEST_FILES:
        for pattern in yaml.safe_load(path.read_text()).get("rule_files", []):
            loaded |= {p.resolve() for p in path.parent.glob(pattern)}
    assert RULES_FILE.resolve() in loaded
    for path in _yaml_files():
        assert path in TEST_FILES or path.resolve() in loaded, \
            f"{path.name} is neither a promtool test file nor a rule file a test loads"


@pytest.mark.servers
@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(path: Path):
    result = promtool("test", "rules", str(path.relative_to(REPO)))
    assert result.returncode == 0, f"promtool test rules {path.name} failed:\n{result.stdout}{result.stderr}"
    assert "SUCCESS" in result.stdout, result.stdout + result.stderr


# --- (c) the committed file is the generator's output ------------------------------------------

def test_rules_file_equals_fresh_render():
    assert RULES_FILE.read_text() == build_rules.render(), \
        "alerts/cache-exporter.rules.yml is stale: run `python alerts/build_rules.py`"


# --- (d) conventions ---------------------------------------------------------------------------

@pytest.mark.parametrize("rule", [r for r in RULES if "alert" in r],
                         ids=lambda r: f"{r['alert']}-{r['labels']['severity']}")
def test_rule_conventions(rule: dict):
    name = rule["alert"]
    assert NAME_RE.match(name), f"{name}: CamelCase with a Cache/Redis/Memcached/App prefix"
    assert rule["labels"]["severity"] in SEVERITIES
    annotations = rule["annotations"]
    for key in ("summary", "description", "runbook_url"):
        assert annotations.get(key, "").strip(), f"{name}: annotation {key} missing"
    assert annotations["runbook_url"].endswith(f"docs/runbooks.md#{name.lower()}"), annotations["runbook_url"]


def test_only_alerting_rules_with_unique_severity_per_name():
    assert all("alert" in rule for rule in RULES), "recording rules belong in a separate file"
    seen = [(rule["alert"], rule["labels"]["severity"]) for rule in RULES]
    assert len(seen) == len(set(seen)), "two rules share an alert name and a severity"


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading (without the -1, -2 suffix of duplicates)."""
    text = re.sub(r"`|\*\*|__|<[^>]+>", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def runbook_sections(markdown: str) -> dict[str, str]:
    """Anchor -> the section's text, up to the next heading of the same or a higher level."""
    headings: list[tuple[int, int, str]] = []  # (line index, level, anchor)
    lines = markdown.splitlines()
    fence = None
    counts: dict[str, int] = {}
    for i, line in enumerate(lines):
        if m := re.match(r"^\s{0,3}(`{3,}|~{3,})", line):
            if fence is None:
                fence = m.group(1)[0]
            elif m.group(1)[0] == fence:
                fence = None
            continue
        if fence is None and (m := re.match(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$", line)):
            anchor = github_anchor(m.group(2))
            n = counts.get(anchor, 0)
            counts[anchor] = n + 1
            headings.append((i, len(m.group(1)), anchor if n == 0 else f"{anchor}-{n}"))
    sections = {}
    for k, (start, level, anchor) in enumerate(headings):
        end = next((s for s, lv, _ in headings[k + 1:] if lv <= level), len(lines))
        sections[anchor] = "\n".join(lines[start:end])
    return sections


@pytest.mark.parametrize("name", ALERT_NAMES)
def test_runbook_section_exists(name: str):
    assert RUNBOOKS.is_file(), f"{RUNBOOKS.relative_to(REPO)} is missing"
    sections = runbook_sections(RUNBOOKS.read_text())
    assert name.lower() in sections, f"docs/runbooks.md has no heading with anchor #{name.lower()}"
    section = sections[name.lower()]
    missing = [w for w in RUNBOOK_SECTION_WORDS if not re.search(rf"\b{w}\b", section)]
    assert not missing, f"runbook section #{name.lower()} lacks {', '.join(missing)}"


def test_github_anchor():
    assert github_anchor("CacheMemoryExhaustionPredicted") == "cachememoryexhaustionpredicted"
    assert github_anchor("`RedisForkMemoryAtRisk`") == "redisforkmemoryatrisk"
    assert github_anchor("Cache target down (CacheTargetDown)") == "cache-target-down-cachetargetdown"
    sections = runbook_sections("# Runbooks\n## A\n### Meaning\nx\n```\n# not a heading\n```\n## B\ny\n")
    assert sections["a"].endswith("```") and "Meaning" in sections["a"] and "y" not in sections["a"]
    assert "not-a-heading" not in sections


# --- (e) every alert is tested firing and silent --------------------------------------------------

def _alert_tests() -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """alertname -> test files asserting it fires / stays silent, over files loading the rules."""
    fires: dict[str, list[str]] = {}
    silent: dict[str, list[str]] = {}
    for path in TEST_FILES:
        doc = yaml.safe_load(path.read_text())
        if not any(RULES_FILE.resolve() in {p.resolve() for p in path.parent.glob(pattern)}
                   for pattern in doc.get("rule_files", [])):
            continue
        for group in doc["tests"]:
            for case in group.get("alert_rule_test") or []:
                target = fires if case.get("exp_alerts") else silent
                target.setdefault(case["alertname"], []).append(path.name)
    return fires, silent


def _always_firing(name: str) -> bool:
    """A heartbeat such as CacheWatchdog (``vector(1)``, no ``for``) has no silent case to test."""
    return all(re.fullmatch(r"vector\(\s*[\d.]+\s*\)", r["expr"].strip()) for r in RULES if r["alert"] == name)


@pytest.mark.parametrize("name", ALERT_NAMES)
def test_alert_is_tested_firing_and_silent(name: str):
    fires, silent = _alert_tests()
    assert name in fires, f"no promtool test asserts that {name} fires"
    if _always_firing(name):
        assert name not in silent, f"{name} always fires; a silent test of it cannot pass"
    else:
        assert name in silent, f"no promtool test asserts that {name} stays silent"


def test_promtool_tests_name_only_existing_alerts():
    """Tests name alerts of the rules, or of an extra rule file (the peer's), never a typo."""
    extra = set()
    for path in _yaml_files():
        doc = yaml.safe_load(path.read_text())
        if isinstance(doc, dict) and "groups" in doc:
            extra |= {r["alert"] for g in doc["groups"] for r in g["rules"] if "alert" in r}
    assert not extra & set(ALERT_NAMES), "an extra rule file reuses an alert name of the rules"
    fires, silent = _alert_tests()
    unknown = (set(fires) | set(silent)) - set(ALERT_NAMES) - extra
    assert not unknown, f"tests name alerts no rule file defines: {sorted(unknown)}"


# --- (f) the time scale -------------------------------------------------------------------------

RANGE_RE = re.compile(r"\[(\d[0-9a-z]*)\]")


def test_build_scales_every_time_constant():
    scaled = build_rules.build(scale=1 / 60)
    pairs = list(zip(RULES, (r for g in scaled["groups"] for r in g["rules"]), strict=True))
    forecast = {s["labels"]["severity"]: s for r, s in pairs if r["alert"] == "CacheMemoryExhaustionPredicted"}
    assert sorted(forecast) == ["critical", "info", "warning"]
    # Horizons (thresholds on the countdown) and the continuity range are times too; the
    # evidence factors (multiples of the basis) are not.
    until_full = 'min without (instance, pod) (last_over_time(cache_memory_seconds_until_full{store!="app"}[2s]))'
    basis = 'max without (instance, pod) (last_over_time(cache_memory_forecast_basis_seconds{store!="app"}[2s]))'
    assert forecast["warning"]["for"] == "5s"
    assert f"{until_full} < 360\n" in forecast["warning"]["expr"]
    assert forecast["critical"]["for"] == "2s"
    assert f"{until_full} < 60\n" in forecast["critical"]["expr"]
    assert f"{until_full} <= 1 * {basis}\n" in forecast["critical"]["expr"]
    assert forecast["info"]["for"] == "15s"
    assert f"{until_full} < 10080\n" in forecast["info"]["expr"]
    assert f"{until_full} >= 360\n" in forecast["info"]["expr"]
    assert f"{until_full} <= 0.6 * {basis}\n" in forecast["info"]["expr"]
    resident = {s["labels"]["severity"]: s for r, s in pairs if r["alert"] == "CacheResidentMemoryExhaustionPredicted"}
    assert resident["warning"]["expr"] == \
        "min without (instance, pod) (last_over_time(cache_resident_memory_seconds_until_full[2s])) < 360"
    assert resident["critical"]["expr"].endswith(" < 60")
    for rule in [*forecast.values(), *resident.values()]:
        assert not {"3600", "21600", "604800", "[2m]"} & set(re.findall(r"\[\w+\]|\d+", rule["expr"]))
    for original, small in pairs:
        assert original["alert"] == small["alert"]
        assert ("for" in original) == ("for" in small)
        if "for" in original:
            assert seconds(small["for"]) == pytest.approx(seconds(original["for"]) / 60), original["alert"]
        ranges = RANGE_RE.findall(original["expr"])
        assert [seconds(r) for r in RANGE_RE.findall(small["expr"])] == \
            pytest.approx([seconds(r) / 60 for r in ranges]), original["alert"]
    assert any(r["for"] == "30m" for r in RULES)
    assert all(s["for"] == "30s" for r, s in pairs if r.get("for") == "30m")


def test_min_window_floors_every_range_window_and_nothing_else():
    """Scaled to 1/1000 every window would be under 4 s; the floor lifts each one (so WINDOWS names
    them all) and leaves the ``for``s and horizons scaled."""
    plain = build_rules.build(scale=1 / 1000)
    floored = build_rules.build(scale=1 / 1000, min_window=4)
    pairs = list(zip((r for g in plain["groups"] for r in g["rules"]),
                     (r for g in floored["groups"] for r in g["rules"]), strict=True))
    windows = [seconds(w) for _, r in pairs for w in RANGE_RE.findall(r["expr"])]
    assert windows and min(windows) >= 4
    assert min(seconds(w) for r, _ in pairs for w in RANGE_RE.findall(r["expr"])) < 4
    assert [r.get("for") for r, _ in pairs] == [r.get("for") for _, r in pairs]
    assert any(seconds(r["for"]) < 4 for _, r in pairs if "for" in r)
    # Outside the windows, the expressions are the same: thresholds (horizons) are not floored.
    assert [RANGE_RE.sub("[w]", a["expr"]) for a, _ in pairs] == [RANGE_RE.sub("[w]", b["expr"]) for _, b in pairs]
    assert build_rules.build(min_window=4) == build_rules.build()  # at scale 1 every window is longer


@pytest.mark.servers
def test_scaled_rules_pass_promtool_check(tmp_path: Path):
    path = tmp_path / "scaled.rules.yml"
    path.write_text(build_rules.render(scale=1 / 60))
    result = promtool("check", "rules", "--lint=all", "--lint-fatal", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
