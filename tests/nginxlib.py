"""The nginx config checker's layers driven from text, for tests: no file is read, includes stay unresolved."""

from __future__ import annotations

from exporter.audit import Finding
from exporter.nginxconf import analyze
from exporter.nginxconf.lexer import FILE_DONE, Lexer
from exporter.nginxconf.tree import Parser


def _bytes(data: bytes | str) -> bytes:
    # surrogateescape: text that came from undecodable bytes goes back to those bytes
    return data if isinstance(data, bytes) else data.encode("utf-8", "surrogateescape")


def tokenize(data: bytes | str, name: str = "<string>") -> list[tuple[list[str], str, int]]:
    """Every directive of ``data`` as (words, terminator, line); raises NginxConfigError like nginx."""
    lexer = Lexer(_bytes(data).decode("latin-1"), name)
    out = []
    while True:
        words, kind, pos = lexer.next()
        out.append(([w for w, _ in words], kind, lexer.line_at(pos)))
        if kind == FILE_DONE:
            return out


def check_nginx_text(data: bytes | str, name: str = "<string>") -> list[Finding]:
    """Findings for config text; ``include`` is kept as a plain directive. Raises NginxConfigError."""
    return analyze(Parser(None).parse_bytes(_bytes(data), name), name)
