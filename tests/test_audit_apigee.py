"""``cache-exporter audit --apigee-bundle``: ResponseCache policies that cache error responses.

The bundle under tests/fixtures/apigee/weather is laid out like an Apigee export: RC-Forecast caches
every status for 10 min (critical), RC-Alerts has ExcludeErrorResponse true (fine), RC-Stations
caches errors for 5 s (warning, a microcache), RC-Legacy is in no flow (info).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

from exporter import apigee
from exporter.audit import CRITICAL, INFO, WARNING

BUNDLE = REPO / "tests" / "fixtures" / "apigee" / "weather"
POLICY = """<?xml version="1.0" encoding="UTF-8"?>
<ResponseCache name="{name}">
  <CacheKey><KeyFragment ref="request.uri"/></CacheKey>
  <ExpirySettings><TimeoutInSec>{timeout}</TimeoutInSec></ExpirySettings>
  {extra}
</ResponseCache>
"""


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", "audit", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


def by_policy(findings: list) -> dict[str, tuple[str, str]]:
    out = {}
    for f in findings:
        name = f.message.split('"')[1] if '"' in f.message else f.message.split(":")[0]
        out[name] = (f.severity, f.message)
    return out


def test_the_fixture_bundle_findings() -> None:
    findings, errors = apigee.check_bundle(str(BUNDLE))
    assert errors == []
    seen = by_policy(findings)
    assert set(seen) == {"RC-Forecast", "RC-Stations", "RC-Legacy"}  # RC-Alerts excludes errors
    assert seen["RC-Forecast"][0] == CRITICAL
    assert "TimeoutInSec 600" in seen["RC-Forecast"][1]
    assert "apiproxy/policies/RC-Forecast.xml" in seen["RC-Forecast"][1]
    assert seen["RC-Stations"][0] == WARNING and "up to 5 s" in seen["RC-Stations"][1]
    assert seen["RC-Legacy"][0] == INFO and "ref flow.cache.ttl" in seen["RC-Legacy"][1]
    assert [f.severity for f in findings] == [CRITICAL, WARNING, INFO]  # most severe first


def bundle(tmp_path: Path, policies: dict[str, str], flows: bool = False) -> Path:
    root = tmp_path / "bundle"
    (root / "apiproxy" / "policies").mkdir(parents=True)
    for name, text in policies.items():
        (root / "apiproxy" / "policies" / f"{name}.xml").write_text(text)
    if flows:
        (root / "apiproxy" / "proxies").mkdir()
        steps = "".join(f"<Step><Name>{n}</Name></Step>" for n in policies)
        (root / "apiproxy" / "proxies" / "default.xml").write_text(
            f'<ProxyEndpoint name="default"><PreFlow><Request>{steps}</Request></PreFlow></ProxyEndpoint>')
    return root


@pytest.mark.parametrize(("extra", "timeout", "expected"), [
    ("", "600", CRITICAL),  # the default caches every status
    ("<ExcludeErrorResponse>false</ExcludeErrorResponse>", "60", CRITICAL),
    ("<ExcludeErrorResponse> TRUE </ExcludeErrorResponse>", "600", None),
    ("<SkipCachePopulation>response.status.code >= 400</SkipCachePopulation>", "600", None),
    ("<SkipCachePopulation>request.verb = \"POST\"</SkipCachePopulation>", "600", CRITICAL),
    ("", "10", WARNING),
    ("", "11", CRITICAL),
])
def test_exclude_error_response_and_expiry(tmp_path: Path, extra: str, timeout: str, expected: str | None) -> None:
    root = bundle(tmp_path, {"RC": POLICY.format(name="RC", timeout=timeout, extra=extra)})
    findings, errors = apigee.check_bundle(str(root))
    assert errors == []
    assert [f.severity for f in findings] == ([expected] if expected else [])


def test_a_disabled_policy_is_no_finding(tmp_path: Path) -> None:
    text = POLICY.format(name="RC", timeout="600", extra="").replace('name="RC"', 'name="RC" enabled="false"')
    assert apigee.check_bundle(str(bundle(tmp_path, {"RC": text})))[0] == []


def test_a_zip_export_is_read_like_the_directory(tmp_path: Path) -> None:
    archive = tmp_path / "weather_rev3.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in BUNDLE.rglob("*.xml"):
            z.write(path, str(path.relative_to(BUNDLE)))
    from_zip, _ = apigee.check_bundle(str(archive))
    from_dir, _ = apigee.check_bundle(str(BUNDLE))
    assert from_zip == from_dir


# --- bad input ------------------------------------------------------------------------------

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>
<ResponseCache name="Bomb"><ExpirySettings><TimeoutInSec>&lol9;</TimeoutInSec></ExpirySettings></ResponseCache>
"""
EXTERNAL_ENTITY = """<?xml version="1.0"?>
<!DOCTYPE rc [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<ResponseCache name="Xxe"><CacheKey><Prefix>&secret;</Prefix></CacheKey></ResponseCache>
"""


@pytest.mark.parametrize(("text", "says"), [
    (BILLION_LAUGHS, "DOCTYPE or entity declaration is not accepted"),
    (EXTERNAL_ENTITY, "DOCTYPE or entity declaration is not accepted"),
    ('<ResponseCache name="U"><Prefix>&undeclared;</Prefix></ResponseCache>', "not well-formed XML"),
    ('<ResponseCache name="Cut"><ExpirySettings>', "not well-formed XML"),
    ("", "not well-formed XML"),
    ("\xff\xfe<garbage", "not well-formed XML"),
    ("<a>" * 200 + "</a>" * 200, "nested deeper than 64"),
])
def test_bad_xml_is_a_per_file_finding_and_the_rest_is_checked(tmp_path: Path, text: str, says: str) -> None:
    root = bundle(tmp_path, {"RC-Good": POLICY.format(name="RC-Good", timeout="600", extra="")})
    (root / "apiproxy" / "policies" / "Bad.xml").write_text(text, encoding="latin-1")
    started = time.monotonic()
    findings, errors = apigee.check_bundle(str(root))
    assert time.monotonic() - started < 5  # no expansion (the bomb is 10^9 characters expanded)
    assert len(errors) == 1 and says in errors[0] and errors[0].startswith("apiproxy/policies/Bad.xml")
    assert "root:" not in " ".join(errors)  # nothing of /etc/passwd was read into the report
    checks = {(f.check, f.severity) for f in findings}
    assert checks == {(apigee.CHECK_ERRORS, CRITICAL), (apigee.CHECK_UNREADABLE, WARNING)}


def test_oversized_members_and_lying_zip_headers(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    big = POLICY.format(name="Big", timeout="600", extra="<!--" + " " * (apigee.MAX_FILE_SIZE + 10) + "-->")
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("apiproxy/policies/Big.xml", big)  # compresses to a few KiB
        z.writestr("apiproxy/policies/RC.xml", POLICY.format(name="RC", timeout="600", extra=""))
    findings, errors = apigee.check_bundle(str(archive))
    assert errors == [f"apiproxy/policies/Big.xml: larger than {apigee.MAX_FILE_SIZE} bytes"]
    assert any(f.severity == CRITICAL and '"RC"' in f.message for f in findings)


@pytest.mark.parametrize("make", ["missing", "not_a_zip", "no_policies"])
def test_unreadable_bundles_are_config_errors(tmp_path: Path, make: str) -> None:
    path = tmp_path / "b"
    if make == "not_a_zip":
        path.write_bytes(b"PK\x03\x04 this is not a zip")
    elif make == "no_policies":
        (path / "apiproxy" / "proxies").mkdir(parents=True)
    report = apigee.audit_report(str(path))
    assert report.error and report.reason == "config" and str(path) in report.error


# --- the CLI -------------------------------------------------------------------------------

@pytest.mark.servers
def test_cli_audit_apigee_bundle_exit_codes(tmp_path: Path) -> None:
    run = cli("--apigee-bundle", str(BUNDLE))
    assert run.returncode == 1, run.stdout + run.stderr
    assert "apigee_response_cache_caches_errors" in run.stdout and "RC-Forecast" in run.stdout
    assert "ExcludeErrorResponse" in run.stdout
    assert cli("--apigee-bundle", str(BUNDLE), "--fail-on", "critical").returncode == 1

    fixed = tmp_path / "fixed"
    shutil.copytree(BUNDLE, fixed)
    for name, timeout in (("RC-Forecast", "600"), ("RC-Stations", "5"), ("RC-Legacy", "3600")):
        (fixed / "apiproxy" / "policies" / f"{name}.xml").write_text(
            POLICY.format(name=name, timeout=timeout, extra="<ExcludeErrorResponse>true</ExcludeErrorResponse>"))
    run = cli("--apigee-bundle", str(fixed), "--format", "json")
    assert run.returncode == 0, run.stdout + run.stderr
    assert json.loads(run.stdout)["targets"][0]["findings"] == []

    run = cli("--apigee-bundle", str(tmp_path / "nope.zip"))
    assert run.returncode == 2
    assert "could not parse" in run.stdout and "1 unreadable Apigee bundles" in run.stdout
    assert "Traceback" not in run.stderr
