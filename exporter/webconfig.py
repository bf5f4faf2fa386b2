"""The web configuration file (``--web.config.file``): TLS, basic auth and response headers.

The format is the Prometheus exporter-toolkit's ``web-config.yml`` (the keys redis_exporter and
memcached_exporter users already have), so one file serves every exporter of a fleet. The file and
the files it names are watched: a change takes effect for the next connection, without a restart
(certificate rotation); a file that turns invalid keeps the previous configuration and says why.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import ssl
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import bcrypt

from exporter.config import ConfigError, load_yaml

log = logging.getLogger(__name__)

CHECK_EVERY = 1.0  # seconds between looks at the files' modification times
AUTH_CACHE = 256  # successful credentials remembered, so a scrape does not pay for bcrypt every time

_TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                 "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# Go's tls.ClientAuthType names -> Python's verify_mode. Python cannot ask for a certificate
# without verifying it, so the two "any certificate" modes have no equivalent.
_CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
_CLIENT_AUTH_UNSUPPORTED = {"RequestClientCert", "RequireAnyClientCert"}
# Go's TLS 1.2 cipher suite names (crypto/tls) -> OpenSSL's. TLS 1.3 suites are not configurable, as in Go.
_CIPHERS = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
}
_CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1", "X25519": "X25519"}
# exporter-toolkit allows only these response headers to be set.
_HEADERS = {"Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options", "X-XSS-Protection",
            "Strict-Transport-Security"}
_TOP = {"tls_server_config", "http_server_config", "basic_auth_users"}
_TLS_KEYS = {"cert_file", "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version",
             "cipher_suites", "curve_preferences", "prefer_server_cipher_suites"}
_HTTP_KEYS = {"headers", "http2"}


@dataclass
class WebConfig:
    """One parsed, validated web config: what a connection and a request need."""

    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)  # name -> bcrypt hash
    headers: list[tuple[str, str]] = field(default_factory=list)
    files: tuple[str, ...] = ()  # the files it was built from, watched for changes


def parse(path: str) -> WebConfig:
    """Read and validate ``path``; ConfigError names every problem (never a password or hash)."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, [("", f"cannot read: {getattr(exc, 'strerror', None) or exc}")]) from None
    try:
        doc = load_yaml(text, path)
    except ConfigError:
        raise
    except Exception as exc:  # yaml errors: position and problem, no content
        raise ConfigError(path, [("", f"invalid YAML: {getattr(exc, 'problem', None) or type(exc).__name__}")]) \
            from None
    doc = {} if doc is None else doc
    problems: list[tuple[str, str]] = []
    if not isinstance(doc, dict):
        raise ConfigError(path, [("", "expected a mapping at the top level")])
    for key in doc:
        if key not in _TOP:
            problems.append((str(key), f"unknown key (expected one of {', '.join(sorted(_TOP))})"))
    base = os.path.dirname(os.path.abspath(path))
    cfg = WebConfig(files=(os.path.abspath(path),))
    users = doc.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        problems.append(("basic_auth_users", "expected a mapping of user name to bcrypt hash"))
    else:
        for name, hashed in users.items():
            where = f"basic_auth_users.{name}"
            if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")) or len(hashed) != 60:
                problems.append((where, "not a bcrypt hash (expected $2y$... of 60 characters, e.g. from "
                                        "`htpasswd -nBC 10 USER`)"))
                continue
            cfg.users[str(name)] = hashed.encode()
    http = doc.get("http_server_config") or {}
    if not isinstance(http, dict):
        problems.append(("http_server_config", "expected a mapping"))
    else:
        for key in http:
            if key not in _HTTP_KEYS:
                problems.append((f"http_server_config.{key}", "unknown key"))
        headers = http.get("headers") or {}
        if not isinstance(headers, dict):
            problems.append(("http_server_config.headers", "expected a mapping of header to value"))
        else:
            for name, value in headers.items():
                if name not in _HEADERS:
                    problems.append((f"http_server_config.headers.{name}",
                                     f"not allowed (allowed: {', '.join(sorted(_HEADERS))})"))
                elif not isinstance(value, str) or any(c in value for c in "\r\n\0"):
                    problems.append((f"http_server_config.headers.{name}", "expected a one-line string"))
                else:
                    cfg.headers.append((name, value))
    tls = doc.get("tls_server_config")
    if tls is not None:
        if not isinstance(tls, dict):
            problems.append(("tls_server_config", "expected a mapping"))
        else:
            cfg.tls, files = _tls_context(tls, base, problems)
            cfg.files += files
    if problems:
        raise ConfigError(path, problems)
    return cfg


def _tls_context(tls: dict[str, Any], base: str, problems: list[tuple[str, str]]) -> tuple[ssl.SSLContext | None,
                                                                                         tuple[str, ...]]:
    where = "tls_server_config"
    for given in tls:
        if given not in _TLS_KEYS:
            problems.append((f"{where}.{given}", "unknown key"))
    before = len(problems)

    def file(key: str) -> str | None:
        value = tls.get(key)
        if value in (None, ""):
            return None
        if not isinstance(value, str):
            problems.append((f"{where}.{key}", "expected a file path"))
            return None
        full = os.path.join(base, value)  # relative to the web config file, as in exporter-toolkit
        if not os.path.isfile(full):
            problems.append((f"{where}.{key}", f"no such file: {value}"))
        return full

    cert, key, ca = file("cert_file"), file("key_file"), file("client_ca_file")
    if (cert is None) != (key is None) or (cert is None and len(problems) == before):
        problems.append((where, "needs both cert_file and key_file"))
    auth = tls.get("client_auth_type") or ("RequireAndVerifyClientCert" if ca else "NoClientCert")
    if auth in _CLIENT_AUTH_UNSUPPORTED:
        problems.append((f"{where}.client_auth_type", f"{auth} is not supported here (Python's ssl verifies every "
                                                      "client certificate it asks for): use VerifyClientCertIfGiven "
                                                      "or RequireAndVerifyClientCert"))
    elif auth not in _CLIENT_AUTH:
        problems.append((f"{where}.client_auth_type",
                         f"unknown {auth!r} (expected one of {', '.join([*_CLIENT_AUTH, *_CLIENT_AUTH_UNSUPPORTED])})"))
    elif _CLIENT_AUTH[auth] != ssl.CERT_NONE and ca is None and "client_ca_file" not in tls:
        problems.append((f"{where}.client_ca_file", f"required by client_auth_type {auth}"))
    versions = {}
    for bound in ("min_version", "max_version"):
        value = tls.get(bound)
        if value is not None:
            if value not in _TLS_VERSIONS:
                problems.append((f"{where}.{bound}", f"unknown {value!r} (expected one of {', '.join(_TLS_VERSIONS)})"))
            else:
                versions[bound] = _TLS_VERSIONS[value]
    ciphers = tls.get("cipher_suites") or []
    unknown = [c for c in ciphers if c not in _CIPHERS] if isinstance(ciphers, list) else ["(not a list)"]
    if unknown:
        problems.append((f"{where}.cipher_suites", f"unknown or unsupported: {', '.join(map(str, unknown))}"))
    curves = tls.get("curve_preferences") or []
    bad_curves = [c for c in curves if c not in _CURVES] if isinstance(curves, list) else ["(not a list)"]
    if bad_curves:
        problems.append((f"{where}.curve_preferences", f"unknown: {', '.join(map(str, bad_curves))} "
                                                       f"(expected {', '.join(_CURVES)})"))
    if len(problems) > before or cert is None or key is None:  # without a problem both files are given
        return None, ()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = versions.get("min_version", ssl.TLSVersion.TLSv1_2)
    if "max_version" in versions:
        ctx.maximum_version = versions["max_version"]
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        problems.append((where, f"cannot load cert_file/key_file: {getattr(exc, 'reason', None) or exc}"))
        return None, ()
    ctx.verify_mode = _CLIENT_AUTH[auth]
    if ca is not None:
        try:
            ctx.load_verify_locations(ca)
        except (ssl.SSLError, OSError) as exc:
            problems.append((f"{where}.client_ca_file", f"cannot load: {getattr(exc, 'reason', None) or exc}"))
            return None, ()
    if ciphers:
        ctx.set_ciphers(":".join(_CIPHERS[c] for c in ciphers))
    if curves:
        ctx.set_ecdh_curve(_CURVES[curves[0]])  # Python's ssl sets one curve: the first preference
    if tls.get("prefer_server_cipher_suites", True):
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx, tuple(f for f in (cert, key, ca) if f)


class WebConfigFile:
    """The live web config: parsed at start (ConfigError there is fatal), re-read when any of its
    files changes (an error then keeps the previous config and is logged and counted)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._config = parse(path)
        self._stamps = _stamps(self._config.files)
        self._checked = time.monotonic()
        self._lock = threading.Lock()
        self._cache: OrderedDict[bytes, str] = OrderedDict()  # sha256(Authorization) -> user
        self._dummy = bcrypt.hashpw(b"not a password", bcrypt.gensalt(4))
        self.reload_failures = 0
        self.reloads = 0
        self.auth_failures = 0

    def current(self) -> WebConfig:
        now = time.monotonic()
        if now - self._checked >= CHECK_EVERY:
            with self._lock:
                if now - self._checked >= CHECK_EVERY:
                    self._checked = now
                    self._maybe_reload()
        return self._config

    def current_nowait(self) -> WebConfig | None:
        """The config when no look at the files is due, else None: never a stat or a parse, for
        callers on the event loop."""
        if time.monotonic() - self._checked >= CHECK_EVERY:
            return None
        return self._config

    def _maybe_reload(self) -> None:
        stamps = _stamps(self._config.files)
        if stamps == self._stamps:
            return
        self._stamps = stamps
        try:
            config = parse(self.path)
        except ConfigError as exc:
            self.reload_failures += 1
            log.error("web config changed but is invalid, keeping the previous one:\n%s", exc)
            return
        self._config = config
        self._stamps = _stamps(config.files)
        self._cache.clear()
        self.reloads += 1
        log.info("web config reloaded from %s", self.path)

    def tls_context(self) -> ssl.SSLContext | None:
        return self.current().tls

    def authenticate(self, authorization: str | None) -> bool | None:
        """None when no users are configured (open), else whether the Basic credentials match;
        every mismatch counts in ``auth_failures``."""
        verdict = self._verify(authorization)
        if verdict is False:
            with self._lock:
                self.auth_failures += 1
        return verdict

    def known(self, config: WebConfig, authorization: str | None) -> bool:
        """Whether ``config`` lets this request in without a bcrypt check: no users configured, or
        this exact Authorization header already verified for a user still configured. False means
        "not known", never "refused" (nothing is counted): the caller takes the slow path. Never
        waits for the lock (the event loop calls this)."""
        users = config.users
        if not users:
            return True
        if not authorization:
            return False
        key = hashlib.sha256(authorization.encode("utf-8", "surrogateescape")).digest()
        if not self._lock.acquire(blocking=False):
            return False
        try:
            user = self._cache.get(key)
            if user is None or user not in users:
                return False
            self._cache.move_to_end(key)
            return True
        finally:
            self._lock.release()

    def _verify(self, authorization: str | None) -> bool | None:
        users = self.current().users
        if not users:
            return None
        if not authorization or not authorization[:6].lower() == "basic ":
            return False
        key = hashlib.sha256(authorization.encode("utf-8", "surrogateescape")).digest()
        with self._lock:
            user = self._cache.get(key)
            if user is not None and user in users:
                self._cache.move_to_end(key)
                return True
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return False
        name, sep, password = decoded.partition(":")
        hashed = users.get(name)
        # An unknown user costs a bcrypt check too, so timing does not tell which users exist.
        ok = bcrypt.checkpw(password.encode(), hashed or self._dummy) and hashed is not None and sep == ":"
        if ok:
            with self._lock:
                self._cache[key] = name
                while len(self._cache) > AUTH_CACHE:
                    self._cache.popitem(last=False)
        return ok


def _stamps(files: tuple[str, ...]) -> tuple[tuple[float, int, int] | None, ...]:
    out: list[tuple[float, int, int] | None] = []
    for f in files:
        try:
            st = os.stat(f)
            out.append((st.st_mtime, st.st_size, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)
