"""Static check of Apigee proxy bundles for cached error responses (``cache-exporter audit --apigee-bundle``).

The incident: a gateway's ResponseCache policy without ``<ExcludeErrorResponse>true</ExcludeErrorResponse>``
stored a backend 503 and kept serving it after the backend recovered. Apigee caches responses of any
status by default; ``ExcludeErrorResponse`` leaves 4xx and 5xx out, and a ``SkipCachePopulation``
condition on ``response.status.code`` does the same by hand.

A bundle is a directory or a zip holding ``apiproxy/policies/*.xml`` (a shared flow:
``sharedflowbundle/policies``). Each policy file is parsed with expat and no DTD at all: a
``<!DOCTYPE`` (and so every entity declaration, the billion-laughs and external-entity attacks)
rejects the file before anything is expanded. A file that is not well-formed, or too large, is a
per-file error in the report; the other policies are still checked. Zips are read member by member
with a size cap, so a zip bomb costs at most ``MAX_FILE_SIZE`` per member.
"""

from __future__ import annotations

import os
import stat
import zipfile
from dataclasses import dataclass, field
from typing import NoReturn
from xml.parsers import expat

from exporter.audit import CRITICAL, INFO, WARNING, Finding, ReportKind, TargetReport, by_severity

CHECK_ERRORS = "apigee_response_cache_caches_errors"
CHECK_UNREADABLE = "apigee_policy_unreadable"
POLICY_DIRS = ("apiproxy/policies/", "sharedflowbundle/policies/")
FLOW_DIRS = ("apiproxy/proxies/", "apiproxy/targets/", "sharedflowbundle/sharedflows/")
MAX_FILE_SIZE = 1 * 2**20  # a policy is a few KiB
MAX_FILES = 2000
MAX_DEPTH = 64  # policies nest a few levels; bounds the flow walk's recursion
MICROCACHE_SECONDS = 10  # as for nginx: errors cached for at most this long are a warning, not critical
EXPIRY_ELEMENTS = ("TimeoutInSec", "TimeoutInSeconds", "ExpiryDate", "TimeOfDay")


class BundleError(ValueError):
    """A bundle that cannot be read at all (no such path, not a zip, no policies directory)."""


@dataclass
class Element:
    name: str
    attrs: dict[str, str]
    text: str = ""
    children: list[Element] = field(default_factory=list)

    def child(self, name: str) -> Element | None:
        return next((c for c in self.children if c.name == name), None)


def parse_xml(data: bytes, name: str) -> Element:
    """The element tree of ``data``; ValueError with ``name:line`` on anything but plain XML.

    No DTD is accepted (so no entity can be declared, expanded or fetched); a reference to an
    undeclared entity is then a well-formedness error in expat itself.
    """
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[Element] = []
    roots: list[Element] = []

    def refuse(*_: object) -> NoReturn:
        raise ValueError(f"{name}:{parser.CurrentLineNumber}: a DOCTYPE or entity declaration is not accepted "
                         "in a policy file")

    def start(tag: str, attrs: dict[str, str]) -> None:
        if len(stack) >= MAX_DEPTH:
            raise ValueError(f"{name}:{parser.CurrentLineNumber}: elements nested deeper than {MAX_DEPTH}")
        element = Element(tag, attrs)
        (stack[-1].children if stack else roots).append(element)
        stack.append(element)

    def end(_tag: str) -> None:
        stack.pop()

    def text(data: str) -> None:
        if stack:
            stack[-1].text += data

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise ValueError(f"{name}:{exc.lineno}: not well-formed XML ({expat.errors.messages[exc.code]})") from None
    if not roots:
        raise ValueError(f"{name}: no root element")
    return roots[0]


def _read_bundle(path: str) -> tuple[dict[str, bytes], list[str]]:
    """The policy and flow files of a bundle as {relative name: bytes}, and per-file read errors."""
    files: dict[str, bytes] = {}
    errors: list[str] = []
    wanted = POLICY_DIRS + FLOW_DIRS
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise BundleError(f"{path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        for top in wanted:
            directory = os.path.join(path, top)
            try:
                names = sorted(os.listdir(directory))
            except OSError:
                continue
            for entry in names:
                full = os.path.join(directory, entry)
                if not entry.endswith(".xml") or not os.path.isfile(full):
                    continue
                if len(files) >= MAX_FILES:
                    raise BundleError(f"{path}: more than {MAX_FILES} policy and flow files")
                try:
                    with open(full, "rb") as fh:
                        data = fh.read(MAX_FILE_SIZE + 1)
                except OSError as exc:
                    errors.append(f"{top}{entry}: {exc.strerror or exc}")
                    continue
                if len(data) > MAX_FILE_SIZE:
                    errors.append(f"{top}{entry}: larger than {MAX_FILE_SIZE} bytes")
                    continue
                files[top + entry] = data
        return files, errors
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"{path}: neither a directory nor a zip file ({exc})") from None
    with archive:
        for info in archive.infolist():
            # Zips exported from Apigee hold apiproxy/... at the top; some tools add one directory.
            name = info.filename.replace("\\", "/")
            found = next((t for t in wanted if t in name), None)
            rel = name[name.index(found):] if found is not None else ""
            if found is None or info.is_dir() or not rel.endswith(".xml") or "/" in rel[len(found):]:
                continue
            if len(files) >= MAX_FILES:
                raise BundleError(f"{path}: more than {MAX_FILES} policy and flow files")
            if info.file_size > MAX_FILE_SIZE:
                errors.append(f"{rel}: larger than {MAX_FILE_SIZE} bytes")
                continue
            try:
                with archive.open(info) as member:
                    data = member.read(MAX_FILE_SIZE + 1)  # the declared size may lie: cap the read too
            except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as exc:
                errors.append(f"{rel}: cannot be extracted ({exc})")
                continue
            if len(data) > MAX_FILE_SIZE:
                errors.append(f"{rel}: larger than {MAX_FILE_SIZE} bytes")
                continue
            files[rel] = data
    return files, errors


def _attached(flows: dict[str, Element]) -> set[str]:
    """Names of the policies some flow runs as a Step."""
    names: set[str] = set()

    def walk(e: Element) -> None:
        if e.name == "Step":
            step = e.child("Name")
            if step is not None:
                names.add(step.text.strip())
        for c in e.children:
            walk(c)
    for root in flows.values():
        walk(root)
    return names


def _expiry(policy: Element) -> tuple[str, int | None]:
    """The ExpirySettings as text for the report, and the timeout in seconds when it is a literal."""
    settings = policy.child("ExpirySettings")
    if settings is None:
        return "no ExpirySettings", None
    for name in EXPIRY_ELEMENTS:
        e = settings.child(name)
        if e is None:
            continue
        value, ref = e.text.strip(), e.attrs.get("ref", "").strip()
        if not value and not ref:  # exported bundles carry empty <ExpiryDate/> <TimeOfDay/>
            continue
        shown = f"{name} {value}" if value else f"{name}"
        if ref:
            shown += f" (ref {ref})"
        # With a ref, the variable's value wins when set: the literal is only a fallback.
        literal = name.startswith("Timeout") and not ref and value.isascii() and value.isdigit()
        seconds = int(value) if literal else None
        return shown, seconds
    return "ExpirySettings without a timeout", None


def _is_true(e: Element | None) -> bool:
    return e is not None and e.text.strip().lower() == "true"


def check_bundle(path: str) -> tuple[list[Finding], list[str]]:
    """Findings for a bundle, and the per-file errors; raises BundleError if nothing can be read."""
    files, errors = _read_bundle(path)
    policies: dict[str, Element] = {}
    flows: dict[str, Element] = {}
    for rel, data in files.items():
        try:
            root = parse_xml(data, rel)
        except ValueError as exc:
            errors.append(str(exc))
            continue
        (policies if rel.startswith(POLICY_DIRS) else flows)[rel] = root
    if not policies and not errors:
        raise BundleError(f"{path}: no policies under {' or '.join(POLICY_DIRS)}")
    attached = _attached(flows)
    findings = []
    for rel, policy in sorted(policies.items()):
        if policy.name != "ResponseCache":
            continue
        name = policy.attrs.get("name", rel)
        disabled = policy.attrs.get("enabled", "true").strip().lower() == "false"
        if disabled or _is_true(policy.child("ExcludeErrorResponse")):
            continue
        skip = policy.child("SkipCachePopulation")
        if skip is not None and "response.status.code" in skip.text:
            continue  # errors kept out by hand; the condition itself is not evaluated here
        expiry, seconds = _expiry(policy)
        where = f"{rel}: ResponseCache \"{name}\" ({expiry})"
        if flows and name not in attached:
            findings.append(Finding(CHECK_ERRORS, INFO, f"{where} has no ExcludeErrorResponse true but no flow "
                                                        "runs it as a Step: it caches nothing today"))
        elif seconds is not None and seconds <= MICROCACHE_SECONDS:
            findings.append(Finding(CHECK_ERRORS, WARNING, f"{where} caches error responses for up to {seconds} s: "
                                                           "every client gets a backend error that long after "
                                                           "the backend recovers"))
        else:
            findings.append(Finding(CHECK_ERRORS, CRITICAL, f"{where} caches responses of every status, 5xx "
                                                            "included: a backend error is served from the cache "
                                                            "after the backend recovers; add "
                                                            "<ExcludeErrorResponse>true</ExcludeErrorResponse>"))
    for error in errors:
        findings.append(Finding(CHECK_UNREADABLE, WARNING, f"{error}: this policy was not checked"))
    return by_severity(findings), errors


def audit_report(path: str) -> TargetReport:
    """One ``cache-exporter audit`` row for an Apigee bundle. A bundle that cannot be read at all is an
    error row with reason "config" (exit 2); a policy file that cannot be parsed is a warning finding."""
    report = TargetReport(name=f"apigee:{path}", type="apigee", address=path, kind=ReportKind.APIGEE_BUNDLE)
    try:
        report.findings, _ = check_bundle(path)
    except BundleError as exc:
        report.error, report.reason = str(exc), "config"
    return report
