"""``ngx_conf_parse`` with ``ngx_conf_include``: a config file and its includes as one tree of directives.

``include`` is relative to the main file's directory (nginx's conf prefix), glob patterns are
sorted, a pattern matching nothing is fine, a missing plain file is an error. Every included file
must be balanced by itself, as in nginx. Everything is bounded (include depth, number and size of
files, directives, block nesting): beyond a bound is a ``NginxConfigError`` like any refused config.
"""

from __future__ import annotations

import glob
import itertools
import os
import re
import stat
from dataclasses import dataclass, field

from exporter.nginxconf.lexer import BLOCK_DONE, BLOCK_START, FILE_DONE, OK, Lexer, NginxConfigError, show

MAX_INCLUDE_DEPTH = 10
MAX_FILES = 1000
MAX_FILE_SIZE = 4 * 2**20
MAX_TOTAL_BYTES = 16 * 2**20  # all files together: bounds the time of one check
MAX_DIRECTIVES = 250_000  # kept in memory; entries of map/geo/types blocks are checked, not kept
MAX_NESTING = 64  # nested blocks; real configs use a handful
_DATA_BLOCKS = ("map", "geo", "types", "split_clients", "charset_map", "match")  # entries, not directives


@dataclass(slots=True)
class Directive:
    name: str
    args: list[str]
    raw: str  # the directive as written, words joined by one space
    file: str
    line: int
    block: list[Directive] | None = None  # None for a simple directive

    def where(self) -> str:
        return f"{show(self.file)}:{self.line}"


@dataclass
class _Budget:
    files: int = 0
    bytes: int = 0
    directives: int = 0
    stack: list[str] = field(default_factory=list)  # real paths being parsed, for cycles


class Parser:
    """One parse with its budget; includes are resolved against ``prefix``."""

    def __init__(self, prefix: str | None) -> None:
        self.prefix = prefix  # None: include directives stay plain directives and no file is read
        self.budget = _Budget()

    def parse_file(self, path: str, depth: int, nesting: int, origin: tuple[str, int] | None,
                   keep: bool = True) -> list[Directive]:
        err_file, err_line = origin if origin else (path, None)
        real = os.path.realpath(path)
        if real in self.budget.stack:
            chain = " -> ".join(show(p) for p in [*self.budget.stack[self.budget.stack.index(real):], real])
            raise NginxConfigError(err_file, err_line, f"include cycle: {chain}")
        self.budget.files += 1
        if self.budget.files > MAX_FILES:
            raise NginxConfigError(err_file, err_line, f"more than {MAX_FILES} config files included")
        data = self._read(path, err_file, err_line)
        self.budget.stack.append(real)
        try:
            return self.parse_bytes(data, path, depth, nesting, keep)
        finally:
            self.budget.stack.pop()

    def parse_bytes(self, data: bytes, name: str, depth: int = 0, nesting: int = 0,
                    keep: bool = True) -> list[Directive]:
        """One whole file's directives from its bytes; ``name`` is the file in messages."""
        # latin-1: offsets are byte offsets (the 4 KiB token buffer counts bytes) and any bytes decode.
        return self._block(Lexer(data.decode("latin-1"), name), depth, nesting, True, keep)

    def _read(self, path: str, err_file: str, err_line: int | None) -> bytes:
        try:
            # O_NONBLOCK: a FIFO must not block the open; it is then refused as not a regular file.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise NginxConfigError(err_file, err_line, f'open() "{path}" failed: {exc.strerror}') from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise NginxConfigError(err_file, err_line, f'"{path}" is not a regular file')
            if info.st_size > MAX_FILE_SIZE:
                raise NginxConfigError(err_file, err_line, f'"{path}" is {info.st_size} bytes, above the '
                                                           f"{MAX_FILE_SIZE // 2**20} MiB limit for a config file")
            chunks, size = [], 0
            while size <= MAX_FILE_SIZE:
                chunk = os.read(fd, min(MAX_FILE_SIZE + 1 - size, 2**20))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            data = b"".join(chunks)
        except OSError as exc:
            raise NginxConfigError(err_file, err_line, f'read() "{path}" failed: {exc.strerror}') from None
        finally:
            os.close(fd)
        if len(data) > MAX_FILE_SIZE:
            raise NginxConfigError(err_file, err_line, f'"{path}" grew above {MAX_FILE_SIZE // 2**20} MiB')
        self.budget.bytes += len(data)
        if self.budget.bytes > MAX_TOTAL_BYTES:
            raise NginxConfigError(err_file, err_line, f"included files exceed {MAX_TOTAL_BYTES // 2**20} MiB in total")
        return data

    def _block(self, lexer: Lexer, depth: int, nesting: int, top: bool, keep: bool = True) -> list[Directive]:
        """``ngx_conf_parse`` of one block (``top``: of a whole file). ``keep=False`` checks the syntax
        of a data block (map, geo, types, ...) without storing its possibly huge list of entries."""
        out: list[Directive] = []
        while True:
            words, kind, first = lexer.next()
            if kind == BLOCK_DONE:
                if top:
                    raise lexer.error(first, 'unexpected "}"')
                return out
            if kind == FILE_DONE:
                if not top:
                    raise lexer.error(lexer.size, 'unexpected end of file, expecting "}"')
                return out
            name = words[0][0]
            if name == "include" and self.prefix is not None:
                if kind == BLOCK_START:
                    raise lexer.error(lexer.pos - 1, 'directive "include" is not terminated by ";"')
                d = Directive(name, [w for w, _ in words[1:]], "", lexer.name, lexer.line_at(first))
                included = self._include(d, depth, nesting, keep)
                if keep:
                    out.extend(included)
                continue
            if not keep and kind == OK:
                continue
            self.budget.directives += 1
            if self.budget.directives > MAX_DIRECTIVES:
                raise lexer.error(first, f"more than {MAX_DIRECTIVES} directives")
            d = Directive(name, [w for w, _ in words[1:]], " ".join(r for _, r in words), lexer.name,
                          lexer.line_at(first))
            if kind == BLOCK_START:
                if name.endswith("_by_lua_block"):
                    lexer.skip_lua_block(d.line)
                    d.block = []
                elif nesting >= MAX_NESTING:
                    raise lexer.error(lexer.pos - 1, f"blocks nested more than {MAX_NESTING} deep")
                else:
                    d.block = self._block(lexer, depth, nesting + 1, False, keep and name not in _DATA_BLOCKS)
            if keep:
                out.append(d)

    def _include(self, d: Directive, depth: int, nesting: int, keep: bool) -> list[Directive]:
        """``ngx_conf_include``: relative to the conf prefix; glob results sorted; no match is fine."""
        if len(d.args) != 1:
            raise NginxConfigError(d.file, d.line, 'invalid number of arguments in "include" directive')
        if depth + 1 > MAX_INCLUDE_DEPTH:
            raise NginxConfigError(d.file, d.line, f"includes nested more than {MAX_INCLUDE_DEPTH} deep")
        assert self.prefix is not None
        pattern = os.path.join(self.prefix, d.args[0])
        if "\0" in pattern:
            raise NginxConfigError(d.file, d.line, f'open() "{pattern}" failed: embedded NUL byte')
        if not any(c in pattern for c in "*?["):
            paths = [pattern]
        else:
            try:
                paths = sorted(itertools.islice(glob.iglob(pattern), MAX_FILES + 1), key=os.fsencode)
            except (OSError, ValueError, re.error) as exc:
                raise NginxConfigError(d.file, d.line, f'glob() "{pattern}" failed: {exc}') from None
        out: list[Directive] = []
        for path in paths:
            out.extend(self.parse_file(path, depth + 1, nesting, (d.file, d.line), keep))
        return out


def load(path: str, prefix: str | None = None) -> list[Directive]:
    """Parse ``path`` with its includes resolved against ``prefix`` (default: the file's directory)."""
    if prefix is None:
        prefix = os.path.dirname(path)
    return Parser(prefix).parse_file(path, 0, 0, None)
