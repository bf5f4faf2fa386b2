"""Read target secrets from env vars or files, and keep them out of every output.

Secrets are read at connect time (so a rotated password file is picked up on the next
reconnect) and remembered only in a redaction set; a logging filter and ``redact()`` scrub
any remembered secret from log records, error messages and HTTP bodies as a last line of
defence — the primary defence is that no code path formats a secret in the first place.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exporter.targets import Credentials

MAX_SECRET_FILE_SIZE = 64 * 1024
_REDACTED = "<redacted>"
_known: set[str] = set()
_lock = threading.Lock()


class SecretUnavailable(Exception):
    """The env var is unset or the file is unreadable. The message names the source, never a value."""


def remember(secret: str) -> None:
    """Register a secret so that ``redact`` and the log filter can scrub it."""
    if len(secret) >= 3:  # scrubbing 1-2 char strings would mangle ordinary text
        with _lock:
            _known.add(secret)


def redact(text: str) -> str:
    """Replace every known secret in ``text``."""
    with _lock:
        secrets = sorted(_known, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, _REDACTED)
    return text


def read_password(creds: Credentials) -> str | None:
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
    """Scrub known secrets from a record's final message (args included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _known:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record must not kill logging
            return True
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            # Tracebacks are rendered later by the formatter; pre-render and scrub them now.
            formatter = logging.Formatter()
            record.exc_text = redact(formatter.formatException(record.exc_info))
            record.exc_info = None
        return True
