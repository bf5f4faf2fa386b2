"""Read target secrets from env vars or files, and keep them out of every output.

Secrets are read at connect time (so a rotated password file is picked up on the next
reconnect) and remembered only in a redaction set; a logging filter, ``redact()`` and
``redact_values()`` scrub any remembered secret from log records, error messages and HTTP
bodies as a last line of defence — the primary defence is that no code path formats a
secret in the first place.

Redaction is structural because a password is just a string and may equal ordinary text.
With the password ``null``, replacing substrings of the serialized /targets body rewrote
every JSON ``null`` literal (invalid JSON), and a target named ``r_null`` became
``r_<redacted>`` in the logs, hiding which target was failing. So:

* JSON bodies are redacted value by value before serialization (``redact_values``): keys and
  JSON syntax are never touched, nor the operator's own ``name`` and ``labels``.
* In free text (log messages, error details, text responses) a secret is scrubbed wherever
  it occurs, even inside a longer word: a server that echoes it glued to other text ("x" +
  password as a cache name) must not get it through. What is never scrubbed are the names
  the operator gave (``public``: target names and static label values), wherever they
  stand: ``r_null`` stays ``r_null``. A name equal to the secret is public anyway: it is the
  ``target`` label of every series.

The price is that a weak password also scrubs ordinary words containing it (``null`` in
``nullable``): erring towards scrubbing, never towards a leak.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from typing import Any, Protocol, overload

MAX_SECRET_FILE_SIZE = 64 * 1024
MIN_SECRET_LENGTH = 3  # scrubbing 1-2 char strings would mangle ordinary text
MAX_PUBLIC_NAMES = 100_000  # names kept whole; past this, new names are not protected (and no harm done)
_REDACTED = "<redacted>"

# Fields of a top-level JSON record that the operator wrote into the config to identify a
# target; they are shown so the operator can find the target and are never a secret (the
# config refuses credentials outside password_env/password_file). Scrubbing them would only
# hide which target failed, e.g. a target named "cache-null" with the password "null".
OPERATOR_FIELDS = frozenset({"name", "labels"})

# Replaced as a whole under _lock, read without it: a reader sees an old or a new pattern,
# never half of one. remember() runs at every reconnect, so it only recompiles for news.
_known: frozenset[str] = frozenset()
_public: frozenset[str] = frozenset()
_pattern: re.Pattern[str] | None = None
_lock = threading.Lock()


class SecretUnavailable(Exception):
    """The env var is unset or the file is unreadable. The message names the source, never a value."""


def remember(secret: str) -> None:
    """Register a secret so that ``redact``, ``redact_values`` and the log filter scrub it."""
    global _known, _pattern
    if len(secret) < MIN_SECRET_LENGTH or secret in _known:
        return
    with _lock:
        if secret not in _known:
            known = _known | {secret}
            _pattern = _compile(known, _public)
            _known = known


def public(*names: str) -> None:
    """Register names the operator gave (target names, static label values): never scrubbed."""
    global _public, _pattern
    new = {n for n in names if n and n not in _public}
    if not new or len(_public) >= MAX_PUBLIC_NAMES:
        return
    with _lock:
        names_now = _public | new
        _public = names_now
        if _known:
            _pattern = _compile(_known, names_now)


def _compile(secrets: frozenset[str], names: frozenset[str]) -> re.Pattern[str]:
    """One alternation: the public names that contain a secret first (a match there is kept
    whole), then the secrets, longest first so a secret wins over its own prefix."""
    relevant = sorted((n for n in names if any(s in n for s in secrets)), key=lambda n: (-len(n), n))
    alternatives = "|".join(re.escape(s) for s in sorted(secrets, key=lambda s: (-len(s), s)))
    if relevant:
        return re.compile("(" + "|".join(re.escape(n) for n in relevant) + ")|" + alternatives)
    return re.compile(alternatives)


def _replace(match: re.Match[str]) -> str:
    return match.group(1) if match.lastindex else _REDACTED


def _sub(pattern: re.Pattern[str], text: str) -> str:
    return pattern.sub(_replace if pattern.groups else _REDACTED, text)


def redact(text: str) -> str:
    """Replace every known secret in ``text``, except inside the operator's own names."""
    pattern = _pattern
    return text if pattern is None else _sub(pattern, text)


@overload
def redact_values(payload: list[dict[str, Any]], keep: frozenset[str] = ...) -> list[dict[str, Any]]: ...
@overload
def redact_values(payload: object, keep: frozenset[str] = ...) -> object: ...
def redact_values(payload: object, keep: frozenset[str] = OPERATOR_FIELDS) -> object:
    """A copy of a JSON-able ``payload`` with every string value redacted.

    Dict keys are left alone, and so are the ``keep`` fields of the top-level record(s): the
    payload itself if it is a dict, or the dicts directly inside it if it is a list.
    """
    pattern = _pattern
    if pattern is None:
        return payload

    def sub(_: str, text: str) -> str:
        return _sub(pattern, text)
    if isinstance(payload, (list, tuple)):
        return [_walk(v, sub, keep) for v in payload]
    return _walk(payload, sub, keep)


_SCALARS = (int, float, type(None))  # bool is an int


def _walk(value: object, sub: Callable[[str, str], str], keep: frozenset[str] = frozenset()) -> object:
    # Scalars are handled inline, without a call per leaf: /targets has thousands of them.
    if isinstance(value, dict):
        return {k: v if k in keep or isinstance(v, _SCALARS) else sub(_REDACTED, v) if isinstance(v, str)
                else _walk(v, sub) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [v if isinstance(v, _SCALARS) else sub(_REDACTED, v) if isinstance(v, str)
                else _walk(v, sub) for v in value]
    return sub(_REDACTED, value) if isinstance(value, str) else value


class SecretRef(Protocol):
    """Where a secret lives (``targets.Credentials`` is one): this module needs no more of a target,
    so it imports nothing of the package and ``targets`` can import it."""

    @property
    def password_env(self) -> str | None: ...

    @property
    def password_file(self) -> str | None: ...


def read_password(creds: SecretRef) -> str | None:
    """Return the password from ``password_env`` or ``password_file``, or None if none is configured."""
    if creds.password_env:
        value = os.environ.get(creds.password_env)
        if value is None:
            raise SecretUnavailable(f"environment variable {creds.password_env} is not set")
        remember(value)
        return value
    if creds.password_file:
        try:
            with open(creds.password_file, "rb") as fh:
                raw = fh.read(MAX_SECRET_FILE_SIZE + 1)
        except OSError as exc:
            raise SecretUnavailable(
                f"cannot read password_file {creds.password_file}: {exc.strerror or 'error'}"
            ) from None
        if len(raw) > MAX_SECRET_FILE_SIZE:
            raise SecretUnavailable(f"password_file {creds.password_file} is larger than 64 KiB")
        try:
            # Files written by `echo` or Kubernetes tooling usually end in a newline.
            value = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise SecretUnavailable(f"password_file {creds.password_file} is not UTF-8") from None
        remember(value)
        return value
    return None


class RedactingFilter(logging.Filter):
    """Scrub known secrets from a record's rendered message, traceback and stack.

    The rendered message is scrubbed, never the format string or the formatted line: a
    secret can be split between format and args, and the formatted line is the handler's
    syntax (logfmt quoting, JSON) that a replacement must not break.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if _pattern is None:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record must not kill logging
            return True
        cleaned = redact(message)
        if cleaned != message or record.args:
            # Freeze what was checked: args rendered again later could render differently.
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            # Tracebacks are rendered later by the formatter; pre-render and scrub them now.
            formatter = logging.Formatter()
            record.exc_text = redact(formatter.formatException(record.exc_info))
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
