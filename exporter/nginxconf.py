"""Static check of nginx configs for cached error responses (``cache-exporter audit --nginx-config``).

The incident: a gateway with ``proxy_cache_valid any 1m`` cached a backend 503 and kept serving it
after the backend recovered. ``proxy_cache_valid <time>`` alone caches only 200/301/302; ``any`` or
explicit 5xx codes also cache errors, including the 502/504 nginx itself returns when the upstream
is unreachable. The same holds for ``fastcgi_``, ``uwsgi_`` and ``scgi_cache_valid``.

Parsing follows nginx's own code, so a config is read the way nginx reads it:

* ``_Lexer`` is ``ngx_conf_read_token`` (src/core/ngx_conf_file.c): words split on space, tab, CR,
  LF; ``;`` ``{`` ``}``; quotes with backslash escapes; ``#`` comments; ``${var}``; the 4 KiB token
  buffer ("too long parameter"). ``*_by_lua_block`` bodies are skipped the way ngx_lua does.
* ``include`` is ``ngx_conf_include``: relative to the main file's directory (nginx's conf prefix),
  glob patterns sorted, a pattern matching nothing is fine, a missing plain file is an error. Every
  included file must be balanced by itself, as in nginx.
* The walk is the proxy module's merge: an inner ``proxy_cache`` overrides the outer one, and any
  ``proxy_cache_valid`` in a block replaces the inherited list entirely (array directive). A status
  takes the time of the first entry that matches it or ``any`` (``ngx_http_file_cache_valid``).

A finding is reported where a request is actually cached: per ``location`` that passes to the
backend (``proxy_pass`` etc., also inside ``if``/``limit_except``) with the cache enabled there.
A file without a top-level ``http`` block is treated as a fragment (a sites-enabled file or a
snippet): its outer context is unknown, so a ``*_cache`` it does not set is assumed on, and a top
level without server/location blocks counts as a proxying location when it sets ``*_cache_valid``.

Everything is bounded (include depth, number and size of files, block nesting); anything nginx would
refuse, and anything outside the bounds, raises ``NginxConfigError`` with file:line.
"""

from __future__ import annotations

import bisect
import glob
import itertools
import os
import re
import stat
from dataclasses import dataclass, field

from exporter.audit import CRITICAL, INFO, WARNING, Finding, ReportKind, TargetReport, by_severity

CHECK_ERRORS = "nginx_caches_errors"
CHECK_NOT_FOUND = "nginx_caches_not_found"

MAX_INCLUDE_DEPTH = 10
MAX_FILES = 1000
MAX_FILE_SIZE = 4 * 2**20
MAX_TOTAL_BYTES = 16 * 2**20  # all files together: bounds the time of one check
MAX_DIRECTIVES = 250_000  # kept in memory; entries of map/geo/types blocks are checked, not kept
MAX_NESTING = 64  # nested blocks; real configs use a handful
MICROCACHE_SECONDS = 10  # errors cached for at most this long: warning instead of critical

MODULES = ("proxy", "fastcgi", "uwsgi", "scgi")
NGX_CONF_BUFFER = 4096
_NGX_MAX_INT = 2**63 - 1
_SCOPES = ("http", "server", "location")  # blocks whose loc conf the request-time merge walks
_PASS_CARRIERS = ("if", "limit_except")  # nested loc confs that inherit everything of their location
_DATA_BLOCKS = ("map", "geo", "types", "split_clients", "charset_map", "match")  # entries, not directives


class NginxConfigError(ValueError):
    """A config nginx would refuse (or one beyond this checker's bounds); str() starts with file:line."""

    def __init__(self, file: str, line: int | None, message: str) -> None:
        self.file, self.line = _show(file), line
        where = f"{self.file}:{line}" if line is not None else self.file
        super().__init__(f"{where}: {_show(message)}")


def _show(text: str) -> str:
    """Printable text: undecodable bytes (kept as surrogates) become U+FFFD instead of crashing print()."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


# --- times ------------------------------------------------------------------------------------

def parse_nginx_time(value: str, is_sec: bool = True) -> int:
    """``ngx_parse_time``: seconds when ``is_sec`` (``*_cache_valid``), else milliseconds.

    Units y M w d h m s (and ms when not ``is_sec``), largest first, optionally space-separated,
    e.g. ``10s``, ``1m``, ``1h30m``, ``1d``, ``500ms``; a bare number is seconds (or ms). Raises
    ValueError for anything nginx rejects, including ``500ms`` where seconds are expected.
    """
    st_start, st_year, st_month, st_week, st_day, st_hour, st_min, st_sec, st_msec, st_last = range(10)
    units = {"y": (st_year, 365 * 86400), "M": (st_month, 30 * 86400), "w": (st_week, 7 * 86400),
             "d": (st_day, 86400), "h": (st_hour, 3600), "m": (st_min, 60), "s": (st_sec, 1)}
    cutoff, cutlim = divmod(_NGX_MAX_INT, 10)
    step = st_start if is_sec else st_month
    valid, number, total, i, n = False, 0, 0, 0, len(value)
    while i < n:
        c = value[i]
        if "0" <= c <= "9":
            if number >= cutoff and (number > cutoff or int(c) > cutlim):
                raise ValueError(f"invalid time value {value!r}")
            number, i, valid = number * 10 + int(c), i + 1, True
            continue
        i += 1
        if c == "m" and i < n and value[i] == "s":
            if is_sec or step >= st_msec:
                raise ValueError(f"invalid time value {value!r}")
            i, step, limit, scale = i + 1, st_msec, _NGX_MAX_INT, 1
        elif c in units:
            new, scale = units[c]
            if (step > st_start) if c == "y" else (step >= new):
                raise ValueError(f"invalid time value {value!r}")
            step, limit = new, _NGX_MAX_INT // scale
        elif c == " ":
            if step >= st_sec:
                raise ValueError(f"invalid time value {value!r}")
            step, limit, scale = st_last, _NGX_MAX_INT, 1
        else:
            raise ValueError(f"invalid time value {value!r}")
        if step != st_msec and not is_sec:
            scale, limit = scale * 1000, limit // 1000
        if number > limit:
            raise ValueError(f"invalid time value {value!r}")
        number *= scale
        if total > _NGX_MAX_INT - number:
            raise ValueError(f"invalid time value {value!r}")
        total, number = total + number, 0
        while i < n and value[i] == " ":
            i += 1
    if not valid:
        raise ValueError(f"invalid time value {value!r}")
    if not is_sec:
        if number > _NGX_MAX_INT // 1000:
            raise ValueError(f"invalid time value {value!r}")
        number *= 1000
    if total > _NGX_MAX_INT - number:
        raise ValueError(f"invalid time value {value!r}")
    return total + number


# --- lexer: ngx_conf_read_token -----------------------------------------------------------------

OK, BLOCK_START, BLOCK_DONE, FILE_DONE = ";", "{", "}", "EOF"
_WS = " \t\r\n"
_SPACES = re.compile(r"[ \t\r\n]*")
# An unquoted word runs to a space, ";" or "{"; a backslash quotes the next byte, and "{" right
# after "$" belongs to the word (${var}). A backslash at the very end of the file ends the match.
_UNQUOTED = re.compile(r"(?:[^ \t\r\n;{\\$]|\\[\s\S]|\$\{*)*")
_QUOTED = {'"': re.compile(r'(?:[^"\\]|\\[\s\S])*'), "'": re.compile(r"(?:[^'\\]|\\[\s\S])*")}
_ESCAPE = re.compile(r"""\\(["'\\trn])""")
_ESCAPED = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "r": "\r", "n": "\n"}
_LUA_STOP = re.compile(r"""[{}"'\[\-]""")
_LUA_LONG_OPEN = re.compile(r"\[(=*)\[")
_LUA_STRING_STOP = {'"': re.compile(r'["\\\n]'), "'": re.compile(r"['\\\n]")}


def _decode(latin1: str) -> str:
    """Back from the lexer's latin-1 view to text: UTF-8, undecodable bytes kept as surrogates."""
    return latin1 if latin1.isascii() else latin1.encode("latin-1").decode("utf-8", "surrogateescape")


def _unescape(raw: str) -> str:
    """nginx's copy loop: \\" \\' \\\\ \\t \\r \\n are translated, any other backslash is kept."""
    return _decode(_ESCAPE.sub(lambda m: _ESCAPED[m.group(1)], raw) if "\\" in raw else raw)


class _Lexer:
    """One file's tokens, exactly as ``ngx_conf_read_token`` splits them.

    ``text`` is the file's bytes decoded as latin-1, so offsets are byte offsets (the 4 KiB buffer
    rule counts bytes) and every byte string is accepted; words are re-decoded as UTF-8 afterwards.
    """

    def __init__(self, text: str, name: str) -> None:
        self.text, self.name, self.pos, self.size = text, name, 0, len(text)
        self._newlines: list[int] | None = None

    def line_at(self, pos: int) -> int:
        if self._newlines is None:
            self._newlines = [m.start() for m in re.finditer("\n", self.text)]
        return bisect.bisect_left(self._newlines, pos) + 1

    def error(self, pos: int, message: str) -> NginxConfigError:
        return NginxConfigError(self.name, self.line_at(pos), message)

    def _eof(self) -> NginxConfigError:
        return self.error(self.size, 'unexpected end of file, expecting ";" or "}"')

    def _check_length(self, start: int, end: int, quote_close: int | None = None, quote: str = "") -> None:
        """nginx reads through a 4096-byte buffer and fails on a token or comment that fills it.

        ``start`` is nginx's ``start`` pointer for the token and ``end`` the last offset at which it
        still points there. nginx refills the buffer at ``start + 4096`` at the latest and fails there
        if the token is still in progress and the file is not exhausted yet.
        """
        limit = start + NGX_CONF_BUFFER
        if min(end, self.size) >= limit and limit < self.size:
            if quote_close is not None and limit <= quote_close:
                raise self.error(start, f'too long parameter, probably missing terminating "{quote}" character')
            excerpt = _decode(self.text[start:start + 10])
            raise self.error(start, f'too long parameter "{excerpt}..." started')

    def next(self) -> tuple[list[tuple[str, str]], str, int]:
        """The next directive: its words as (value, as written), what ended it (OK, BLOCK_START,
        BLOCK_DONE or FILE_DONE), and the offset of its first word (or of the terminator)."""
        text, n = self.text, self.size
        words: list[tuple[str, str]] = []
        first = -1
        i = self.pos
        while True:
            i = _SPACES.match(text, i).end()
            if i >= n:
                if words:
                    raise self._eof()
                self.pos = i
                return words, FILE_DONE, i
            ch = text[i]
            if ch == ";" or ch == "{":
                if not words:
                    raise self.error(i, f'unexpected "{ch}"')
                self.pos = i + 1
                return words, (OK if ch == ";" else BLOCK_START), first
            if ch == "}":
                if words:
                    raise self.error(i, 'unexpected "}"')
                self.pos = i + 1
                return words, BLOCK_DONE, i
            if ch == "#":
                end = text.find("\n", i)
                end = n if end < 0 else end
                self._check_length(i, end)
                i = end
                continue
            if first < 0:
                first = i
            if ch == '"' or ch == "'":
                close = _QUOTED[ch].match(text, i + 1).end()
                if close >= n or text[close] != ch:  # the file ends inside the quotes
                    self._check_length(i + 1, n, n, ch)
                    raise self._eof()
                after = close + 1  # need_space: only a space, ";", "{" or ")" may follow a quote
                nxt = text[after] if after < n else ""
                self._check_length(i + 1, after + 1 if nxt and nxt in _WS else after, close, ch)
                words.append((_unescape(text[i + 1:close]), _decode(text[i:after])))
                if not nxt:
                    raise self._eof()
                if nxt in _WS:
                    i = after + 1
                elif nxt == ";" or nxt == "{":
                    self.pos = after + 1
                    return words, (OK if nxt == ";" else BLOCK_START), first
                elif nxt == ")":
                    i = after  # ")" starts the next word, as in `if ($a = "b")`
                else:
                    raise self.error(after, f'unexpected "{_decode(nxt)}"')
                continue
            stop = _UNQUOTED.match(text, i).end()
            if stop >= n or text[stop] == "\\":  # the file ends inside the word
                self._check_length(i, n)
                raise self._eof()
            c = text[stop]
            self._check_length(i, stop + 1 if c in _WS else stop)
            raw = text[i:stop]
            words.append((_unescape(raw), _decode(raw)))
            if c == ";" or c == "{":
                self.pos = stop + 1
                return words, (OK if c == ";" else BLOCK_START), first
            i = stop + 1

    def skip_lua_block(self, line: int) -> None:
        """Skip a ``*_by_lua_block { ... }`` body as ngx_lua reads it: Lua strings, long brackets, comments."""
        text, n = self.text, self.size
        depth, i = 1, self.pos
        while True:
            m = _LUA_STOP.search(text, i)
            if m is None:
                raise self.error(n, f'unexpected end of file, expecting "}}" of the Lua block on line {line}')
            k, c = m.start(), m.group()
            i = k + 1
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    self.pos = i
                    return
            elif c in "\"'":
                while True:
                    q = _LUA_STRING_STOP[c].search(text, i)
                    if q is None or q.group() == "\n":
                        raise self.error(k, "unfinished Lua string")
                    i = q.start() + (2 if q.group() == "\\" else 1)
                    if q.group() == c:
                        break
            elif c == "[":
                i = self._skip_long_bracket(k, i)
            elif c == "-" and text.startswith("-", i):
                if _LUA_LONG_OPEN.match(text, i + 1):
                    i = self._skip_long_bracket(i + 1, i + 1)
                else:
                    end = text.find("\n", i)
                    i = n if end < 0 else end

    def _skip_long_bracket(self, at: int, default: int) -> int:
        m = _LUA_LONG_OPEN.match(self.text, at)
        if m is None:
            return default
        end = self.text.find("]" + m.group(1) + "]", m.end())
        if end < 0:
            raise self.error(at, "unfinished Lua long string or comment")
        return end + len(m.group(1)) + 2


def tokenize(data: bytes | str, name: str = "<string>") -> list[tuple[list[str], str, int]]:
    """Every directive of ``data`` as (words, terminator, line); raises NginxConfigError like nginx."""
    lexer = _Lexer(_latin1(data), name)
    out = []
    while True:
        words, kind, pos = lexer.next()
        out.append(([w for w, _ in words], kind, lexer.line_at(pos)))
        if kind == FILE_DONE:
            return out


def _latin1(data: bytes | str) -> str:
    return (data if isinstance(data, bytes) else data.encode("utf-8", "surrogateescape")).decode("latin-1")


# --- tree: ngx_conf_parse with includes ---------------------------------------------------------

@dataclass(slots=True)
class Directive:
    name: str
    args: list[str]
    raw: str  # the directive as written, words joined by one space
    file: str
    line: int
    block: list[Directive] | None = None  # None for a simple directive

    def where(self) -> str:
        return f"{_show(self.file)}:{self.line}"


@dataclass
class _Budget:
    files: int = 0
    bytes: int = 0
    directives: int = 0
    stack: list[str] = field(default_factory=list)  # real paths being parsed, for cycles


class _Parser:
    def __init__(self, prefix: str | None) -> None:
        self.prefix = prefix  # None: leave include directives unresolved (parsing text)
        self.budget = _Budget()

    def parse_file(self, path: str, depth: int, nesting: int, origin: tuple[str, int] | None,
                   keep: bool = True) -> list[Directive]:
        err_file, err_line = origin if origin else (path, None)
        real = os.path.realpath(path)
        if real in self.budget.stack:
            chain = " -> ".join(_show(p) for p in [*self.budget.stack[self.budget.stack.index(real):], real])
            raise NginxConfigError(err_file, err_line, f"include cycle: {chain}")
        self.budget.files += 1
        if self.budget.files > MAX_FILES:
            raise NginxConfigError(err_file, err_line, f"more than {MAX_FILES} config files included")
        data = self._read(path, err_file, err_line)
        self.budget.stack.append(real)
        try:
            return self._block(_Lexer(data.decode("latin-1"), path), depth, nesting, True, keep)
        finally:
            self.budget.stack.pop()

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

    def _block(self, lexer: _Lexer, depth: int, nesting: int, top: bool, keep: bool = True) -> list[Directive]:
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


def parse_text(data: bytes | str, name: str = "<string>") -> list[Directive]:
    """Parse config text; ``include`` directives stay unresolved. Raises NginxConfigError."""
    return _Parser(None)._block(_Lexer(_latin1(data), name), 0, 0, True)


def load(path: str, prefix: str | None = None) -> list[Directive]:
    """Parse ``path`` with its includes resolved against ``prefix`` (default: the file's directory)."""
    if prefix is None:
        prefix = os.path.dirname(path)
    return _Parser(prefix).parse_file(path, 0, 0, None)


# --- the check ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Entry:
    status: int  # 0 = any
    seconds: int
    directive: Directive


_UNKNOWN = Directive("(inherited)", [], "", "", 0)  # fragment: the including context's *_cache


@dataclass(frozen=True)
class _Effective:
    cache: Directive | None  # the *_cache directive in effect, _UNKNOWN, or None (off by default)
    valid: tuple[_Entry, ...]


def _valid_entries(d: Directive) -> list[_Entry]:
    """``ngx_http_file_cache_valid_set_slot``."""
    if d.block is not None:
        raise NginxConfigError(d.file, d.line, f'directive "{d.name}" is not terminated by ";"')
    if not d.args:
        raise NginxConfigError(d.file, d.line, f'invalid number of arguments in "{d.name}" directive')
    try:
        seconds = parse_nginx_time(d.args[-1], is_sec=True)
    except ValueError:
        raise NginxConfigError(d.file, d.line, f'invalid time value "{d.args[-1]}" in "{d.name}"') from None
    if len(d.args) == 1:
        return [_Entry(status, seconds, d) for status in (200, 301, 302)]
    out = []
    for arg in d.args[:-1]:
        if arg == "any":
            status = 0
        elif re.fullmatch(r"[0-9]+", arg) and 100 <= int(arg) <= 599:
            status = int(arg)
        else:
            raise NginxConfigError(d.file, d.line, f'invalid status "{arg}" in "{d.name}"')
        out.append(_Entry(status, seconds, d))
    return out


_CACHE_DIRECTIVES = {f"{m}_cache": m for m in MODULES}
_VALID_DIRECTIVES = {f"{m}_cache_valid": m for m in MODULES}
_PASS_DIRECTIVES = {f"{m}_pass": m for m in MODULES}


def _passes(nodes: list[Directive]) -> set[str]:
    """The modules whose ``*_pass`` is set in this location (also inside its ``if``/``limit_except``)."""
    out = set()
    for d in nodes:
        if d.block is None:
            if d.name in _PASS_DIRECTIVES:
                out.add(_PASS_DIRECTIVES[d.name])
        elif d.name in _PASS_CARRIERS:
            out |= _passes(d.block)
    return out


def _lookup(entries: tuple[_Entry, ...], status: int) -> _Entry | None:
    return next((e for e in entries if e.status in (0, status)), None)


def _ranges(codes: list[int]) -> str:
    out: list[str] = []
    for code in codes:
        if out and out[-1].split("-")[-1] == str(code - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{code}"
        else:
            out.append(str(code))
    return " ".join(out)


def _context(chain: list[Directive], top: str) -> str:
    """``server api.example.com, location /api/ > /api/v2/``, from the blocks enclosing a location."""
    parts = []
    server = next((d for d in reversed(chain) if d.name == "server"), None)
    if server is not None:
        names = next((s.args for s in server.block or [] if s.name == "server_name" and s.args), None)
        if names:
            parts.append("server " + " ".join(names[:3]) + (" ..." if len(names) > 3 else ""))
        else:
            parts.append(f"server at {server.where()} (no server_name)")
    locations = [" ".join(d.args) for d in chain if d.name == "location"]
    if locations:
        parts.append("location " + " > ".join(locations))
    return ", ".join(parts) or f"the top level of {top}"


def _evaluate(module: str, eff: _Effective, chain: list[Directive], top: str) -> list[Finding]:
    if eff.cache is None or (eff.cache is not _UNKNOWN and eff.cache.args[:1] == ["off"]):
        return []
    if eff.cache is _UNKNOWN:
        cache_note = f"{module}_cache is not set in this file; assuming the including context enables it"
    else:
        cache_note = f"{eff.cache.raw} at {eff.cache.where()}"
    where = _show(_context(chain, top))
    findings = []
    cached = {}
    if any(e.status == 0 or e.status >= 500 for e in eff.valid):
        cached = {code: e for code in range(500, 600) if (e := _lookup(eff.valid, code)) and e.seconds > 0}
    if cached:
        directives = list(dict.fromkeys(e.directive.where() + ": `" + e.directive.raw + "`"
                                        for e in cached.values()))
        worst = max(e.seconds for e in cached.values())
        if len(cached) == 100 and any(e.status == 0 for e in cached.values()):
            what = "every status (5xx included)"
        else:
            what = f"{_ranges(sorted(cached))} responses"
        if worst > MICROCACHE_SECONDS:
            severity, effect = CRITICAL, ("a backend error, or nginx's own 502/504 while the backend is down, is "
                                          "still served from the cache after the backend recovers; cache only "
                                          f"200 301 302 (`{module}_cache_valid <time>`)")
        else:
            severity, effect = WARNING, ("microcaching of errors: every client gets the cached error for up to "
                                         f"{worst} s after the backend recovers")
        findings.append(Finding(CHECK_ERRORS, severity, _show(
            f"{'; '.join(directives)} caches {what} for up to {worst} s in {where} ({cache_note}): {effect}")))
    e404 = _lookup(eff.valid, 404)
    if e404 is not None and e404.status == 404 and e404.seconds > 0:
        findings.append(Finding(CHECK_NOT_FOUND, INFO, _show(
            f"{e404.directive.where()}: `{e404.directive.raw}` caches 404 for {e404.seconds} s in {where} "
            f"({cache_note}): a path that 404s while a deploy rolls out stays 404 that long")))
    return findings


def _walk(nodes: list[Directive], outer: dict[str, _Effective], chain: list[Directive], top: str,
          fragment: bool, out: list[Finding]) -> None:
    caches: dict[str, Directive] = {}
    valid: dict[str, list[_Entry]] = {}
    for d in nodes:
        if d.name in _CACHE_DIRECTIVES:
            if d.block is not None:
                raise NginxConfigError(d.file, d.line, f'directive "{d.name}" is not terminated by ";"')
            if len(d.args) != 1:
                raise NginxConfigError(d.file, d.line, f'invalid number of arguments in "{d.name}" directive')
            if _CACHE_DIRECTIVES[d.name] in caches:
                raise NginxConfigError(d.file, d.line, f'"{d.name}" directive is duplicate')
            caches[_CACHE_DIRECTIVES[d.name]] = d
        elif d.name in _VALID_DIRECTIVES:
            valid.setdefault(_VALID_DIRECTIVES[d.name], []).extend(_valid_entries(d))
    effective = outer
    if caches or valid:
        effective = {m: _Effective(caches.get(m) or outer[m].cache, tuple(valid.get(m, ())) or outer[m].valid)
                     for m in MODULES}
    if chain and chain[-1].name == "location":
        sites = _passes(nodes)
    elif fragment and not chain:
        # A snippet's top level may be a location body (then its *_cache_valid applies to what that
        # location proxies), unless it holds server or location blocks: then it is http or server level.
        nested = any(d.block is not None and d.name in ("server", "location") for d in nodes)
        sites = _passes(nodes) | (set() if nested else set(valid))
    else:
        sites = set()
    for module in MODULES:
        if module in sites:
            out.extend(_evaluate(module, effective[module], chain, top))
    for d in nodes:
        if d.block is not None and d.name in _SCOPES:
            _walk(d.block, effective, [*chain, d], top, fragment, out)


def analyze(tree: list[Directive], name: str = "<string>") -> list[Finding]:
    """Findings for a parsed config, most severe first. A tree without ``http {}`` is a fragment."""
    fragment = not any(d.name == "http" and d.block is not None for d in tree)
    outer = {m: _Effective(_UNKNOWN if fragment else None, ()) for m in MODULES}
    out: list[Finding] = []
    _walk(tree, outer, [], name, fragment, out)
    return by_severity(out)


def check_nginx_config(path: str) -> list[Finding]:
    """Findings for the config at ``path`` (and its includes). Raises NginxConfigError."""
    return analyze(load(path), path)


def check_nginx_text(data: bytes | str, name: str = "<string>") -> list[Finding]:
    """Findings for config text without resolving includes. Raises NginxConfigError."""
    return analyze(parse_text(data, name), name)


def audit_report(path: str) -> TargetReport:
    """One ``cache-exporter audit`` row for an nginx config file.

    A config that cannot be parsed becomes an error row with reason "config"; the audit then exits 2
    (invalid configuration input, like an invalid --config), not 3 (unreachable target).
    """
    report = TargetReport(name=f"nginx:{path}", type="nginx", address=path, kind=ReportKind.NGINX_CONFIG)
    try:
        report.findings = check_nginx_config(path)
    except NginxConfigError as exc:
        report.error, report.reason = str(exc), "config"
    return report
