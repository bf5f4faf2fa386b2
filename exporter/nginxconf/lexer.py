"""``ngx_conf_read_token`` (src/core/ngx_conf_file.c): one file's words and terminators, and the error type.

Words split on space, tab, CR, LF; ``;`` ``{`` ``}``; quotes with backslash escapes; ``#`` comments;
``${var}``; the 4 KiB token buffer ("too long parameter"). ``*_by_lua_block`` bodies are skipped the
way ngx_lua does. ``NginxConfigError`` is raised by every layer of the package, with file:line.
"""

from __future__ import annotations

import bisect
import re

NGX_CONF_BUFFER = 4096


class NginxConfigError(ValueError):
    """A config nginx would refuse (or one beyond this checker's bounds); str() starts with file:line."""

    def __init__(self, file: str, line: int | None, message: str) -> None:
        self.file, self.line = show(file), line
        where = f"{self.file}:{line}" if line is not None else self.file
        super().__init__(f"{where}: {show(message)}")


def show(text: str) -> str:
    """Printable text: undecodable bytes (kept as surrogates) become U+FFFD instead of crashing print()."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


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


def _end(pattern: re.Pattern[str], text: str, pos: int) -> int:
    """Where ``pattern`` stops matching at ``pos``; the lexer's patterns match the empty string, so never None."""
    m = pattern.match(text, pos)
    return pos if m is None else m.end()


def _decode(latin1: str) -> str:
    """Back from the lexer's latin-1 view to text: UTF-8, undecodable bytes kept as surrogates."""
    return latin1 if latin1.isascii() else latin1.encode("latin-1").decode("utf-8", "surrogateescape")


def _unescape(raw: str) -> str:
    """nginx's copy loop: \\" \\' \\\\ \\t \\r \\n are translated, any other backslash is kept."""
    return _decode(_ESCAPE.sub(lambda m: _ESCAPED[m.group(1)], raw) if "\\" in raw else raw)


class Lexer:
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
            i = _end(_SPACES, text, i)
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
                close = _end(_QUOTED[ch], text, i + 1)
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
            stop = _end(_UNQUOTED, text, i)
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
