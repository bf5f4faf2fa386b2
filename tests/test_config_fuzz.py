"""The config loader under hostile input: whatever a config file holds, loading it either
succeeds or raises ConfigError naming the file, the YAML path and the problem; quickly, with
little memory; and whatever it accepts renders as valid Prometheus text.

Hostile values are written as YAML text, as an operator (or an attacker with write access to a
ConfigMap) would: NUL and lone surrogates through double-quoted escapes ("\\0", "\\ud800"),
integers longer than Python reads (4300 digits), anchors, aliases and merge keys. PyYAML's
dumper cannot write most of these, so the documents here are emitted by hand (``Emitter``).
"""

from __future__ import annotations

import datetime
import gc
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
from conftest import REPO, fast_global, free_port, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from exporter import catalog
from exporter.config import MAX_ALIAS_NODES, ConfigError, LoadResult, build_config, parse_config
from exporter.exposition import label_prefix, render_chunks
from exporter.snapshot import Samples

THIS_FILE = str(Path(__file__).resolve())  # exists and is readable: a valid tls file or password_file
LIMIT = sys.get_int_max_str_digits()


class Raw(str):
    """YAML text the emitter writes as is (a huge plain integer, an alias, a tag...)."""


def quoted(text: str) -> str:
    """``text`` as a YAML double-quoted scalar; anything unprintable (NUL, a lone surrogate, a
    line separator) as an escape, which PyYAML turns back into exactly that character."""
    out = []
    for ch in text:
        if ch in '\\"':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def scalar(value: object) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, str):
        return quoted(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return ".nan" if value != value else ".inf" if value == float("inf") else \
            "-.inf" if value == float("-inf") else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    raise TypeError(type(value))


def to_yaml(value: object) -> str:
    """Flow-style YAML for plain data, no anchors (for the handpicked tests)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{to_yaml(k)}: {to_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(to_yaml(v) for v in value) + "]"
    return scalar(value)


def document(targets: list[dict], glob: dict | None = None) -> str:
    """Block-style top level, flow-style below: one target per line."""
    head = f"global: {to_yaml(glob)}\n" if glob is not None else ""
    return head + "targets:\n" + "".join(f"- {to_yaml(t)}\n" for t in targets)


def load(text: str) -> LoadResult:
    return parse_config(text, "hostile.yml")


def problems(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load(text)
    assert str(info.value).startswith("hostile.yml: ")
    return info.value.problems


def bomb(levels: int = 9, width: int = 9, anchor: str = "l") -> str:
    """Billion laughs as one flow sequence: ``levels`` anchors, each ``width`` aliases of the last."""
    parts = [f"&{anchor}0 [" + ", ".join(["500"] * width) + "]"]
    for i in range(1, levels):
        parts.append(f"&{anchor}{i} [" + ", ".join([f"*{anchor}{i - 1}"] * width) + "]")
    return "[" + ", ".join(parts) + "]"


def nested_bomb(levels: int = 9, width: int = 9, anchor: str = "n") -> str:
    """The same, each anchor defined inside the next: the first item is the biggest, which is
    what made the old loader str() ~10**8 values for one error message."""
    text = f"&{anchor}0 [" + ", ".join(["500"] * width) + "]"
    for i in range(1, levels):
        text = f"&{anchor}{i} [{text}, " + ", ".join([f"*{anchor}{i - 1}"] * (width - 1)) + "]"
    return text


# --- hostile values at every kind of field: ConfigError at the field's YAML path ---------------

HOSTILE = {
    # kind: (YAML text of the value, what the message says)
    "nul": (quoted("/run/secrets/a\0b"), "NUL"),
    "surrogate": (quoted("/run/secrets/\ud800"), "surrogate"),
    "digits": ("9" * 5000, "too many digits"),
    "hex-digits": ("0x" + "f" * 5000, "too many digits"),  # hex is read without the limit; printing is not
}


def _redis(**extra: str) -> str:
    return "{" + ", ".join(["name: r", "type: redis", "url: 'rediss://10.0.0.5:6380'",
                            *(f"{k}: {v}" for k, v in extra.items())]) + "}"


FIELDS = {
    # field: (function from a value's YAML text to a document, YAML path)
    "password_file": (lambda v: f"targets:\n- {_redis(password_file=v)}\n", "targets[0].password_file"),
    "tls.ca_file": (lambda v: f"targets:\n- {_redis(tls=f'{{ca_file: {v}}}')}\n", "targets[0].tls.ca_file"),
    "tls.cert_file": (lambda v: f"targets:\n- {_redis(tls=f'{{cert_file: {v}, key_file: {quoted(THIS_FILE)}}}')}\n",
                      "targets[0].tls.cert_file"),
    "tls.key_file": (lambda v: f"targets:\n- {_redis(tls=f'{{cert_file: {quoted(THIS_FILE)}, key_file: {v}}}')}\n",
                     "targets[0].tls.key_file"),
    "label": (lambda v: f"targets:\n- {_redis(labels=f'{{team: {v}}}')}\n", "targets[0].labels.team"),
    "global-label": (lambda v: f"global: {{labels: {{env: {v}}}}}\ntargets:\n- {_redis()}\n", "global.labels.env"),
    "name": (lambda v: f"targets:\n- {{name: {v}, type: redis, url: 'redis://h'}}\n", "targets[0].name"),
    "redis-url": (lambda v: f"targets:\n- {{name: r, type: redis, url: {v}}}\n", "targets[0].url"),
    "memcached-address": (lambda v: f"targets:\n- {{name: m, type: memcached, address: {v}}}\n",
                          "targets[0].address"),
    "app-url": (lambda v: f"targets:\n- {{name: a, type: app, url: {v}}}\n", "targets[0].url"),
    "http-urls": (lambda v: f"targets:\n- {{name: h, type: http_cache, urls: ['http://127.0.0.1/', {v}]}}\n",
                  "targets[0].urls[1]"),
    "header": (lambda v: f"targets:\n- {{name: h, type: http_cache, url: 'http://h/', headers: {{X-A: {v}}}}}\n",
               "targets[0].headers.X-A"),
    "error_statuses": (lambda v: f"targets:\n- {{name: h, type: http_cache, url: 'http://h/', "
                                 f"error_statuses: [500, {v}]}}\n", "targets[0].error_statuses[1]"),
    "interval": (lambda v: f"global: {{interval: {v}}}\ntargets:\n- {_redis()}\n", "global.interval"),
}


@pytest.mark.parametrize("kind", HOSTILE)
@pytest.mark.parametrize("field", FIELDS)
def test_hostile_value_is_a_config_error_at_its_path(field, kind):
    make, path = FIELDS[field]
    value, expected = HOSTILE[kind]
    found = problems(make(value))
    assert [p for p, _ in found] == [path], found
    assert expected in found[0][1]
    if kind == "digits":
        assert "line 2" in found[0][1] or "line 1" in found[0][1]


def test_hostile_key_is_reported_escaped():
    key = quoted("a\ud800b")
    found = problems(f"targets:\n- {{name: r, type: redis, url: 'redis://h', labels: {{{key}: x}}}}\n")
    assert found == [("targets[0].labels.a\\ud800b", "this key contains U+D800, which is not a character "
                                                     "(an unpaired surrogate); it cannot be written as UTF-8")]
    key = quoted("x\0y")
    found = problems(f"targets:\n- {{name: r, type: redis, url: 'redis://h', {key}: 1}}\n")
    assert found == [("targets[0].x\\x00y", "this key contains a NUL character (\\0)")]


def test_every_hostile_value_is_reported_at_once():
    env, name = quoted("a\0"), quoted("x\udfff")
    text = (f"global: {{labels: {{env: {env}}}}}\ntargets:\n"
            f"- {{name: {name}, type: redis, url: 'redis://h', memory_limit: {'1' * 4301}}}\n")
    assert [p for p, _ in problems(text)] == ["global.labels.env", "targets[0].name", "targets[0].memory_limit"]


def test_hostile_values_in_a_python_document_too():
    """build_config (the built-in default, tests, tools) gets the same walk as parse_config."""
    with pytest.raises(ConfigError) as info:
        build_config({"targets": [{"name": "r", "type": "redis", "url": "redis://h",
                                   "labels": {"a": "\ud800", "b": 10**5000}, "password_file": "/x\0"}]}, "py")
    assert [p for p, _ in info.value.problems] == ["targets[0].labels.a", "targets[0].labels.b",
                                                   "targets[0].password_file"]


def test_numbers_at_the_digit_limit_reach_the_field_check():
    found = problems(f"targets:\n- {{name: r, type: redis, url: 'redis://h', memory_limit: {'7' * LIMIT}}}\n")
    assert found == [("targets[0].memory_limit", "a size must be at most 1 EiB")]


def test_values_pyyaml_cannot_build_are_yaml_errors_with_a_line():
    for text in ("targets: !!int ''\n", "targets:\n- !!bool maybe\n", "global: {interval: 2001-02-30}\ntargets: []\n",
                 "targets: [!!float x]\n"):
        found = problems(text)
        assert len(found) == 1 and found[0][0].startswith("line ") and "cannot be read as" in found[0][1], found


# --- aliases ------------------------------------------------------------------------------------

def _timed_rejection(text: str) -> tuple[list[tuple[str, str]], float, int]:
    """Problems found, CPU seconds of this thread spent finding them (wall time would count a busy
    machine's other processes), peak traced memory."""
    tracemalloc.start()
    started = time.thread_time()
    try:
        found = problems(text)
    finally:
        elapsed = time.thread_time() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return found, elapsed, peak


def test_billion_laughs_is_refused_fast_and_small():
    found, elapsed, peak = _timed_rejection(f"global: {{labels: {{x: {bomb()}}}}}\ntargets: []\n")
    assert found == [("", f"the YAML expands to more than {MAX_ALIAS_NODES} extra nodes through aliases "
                          "(an alias bomb?)")]
    assert elapsed < 1.0 and peak < 20 * 2**20, (elapsed, peak)


def test_alias_bomb_in_error_statuses_is_refused_fast_and_small():
    """Before the fix these 500 bytes took 7.3 s and 609 MiB (one level more: 77 s, 4.2 GiB),
    spent in str() of the expanded list for the error message."""
    text = ("targets:\n- name: h\n  type: http_cache\n  url: http://127.0.0.1:1/\n"
            f"  error_statuses: {nested_bomb()}\n")
    found, elapsed, peak = _timed_rejection(text)
    assert [m for _, m in found] == [f"the YAML expands to more than {MAX_ALIAS_NODES} extra nodes through "
                                     "aliases (an alias bomb?)"]
    assert elapsed < 1.0 and peak < 20 * 2**20, (elapsed, peak)


def test_alias_bomb_of_long_strings_is_refused():
    """Few nodes, much text: 300 aliases of a 20 kB string are 6 MB to check."""
    text = (f"global: {{labels: {{x: &s {quoted('x' * 20_000)}}}}}\n"
            f"targets:\n- {{name: h, type: http_cache, url: 'http://h/', headers: {{X: [" + ", ".join(["*s"] * 300)
            + "]}}\n")
    found, elapsed, _ = _timed_rejection(text)
    assert found == [("", "the YAML expands to more than 4 MiB of extra text through aliases (an alias bomb?)")]
    assert elapsed < 1.0


@pytest.mark.parametrize("text", [
    "targets: &a [*a]\n",
    "targets:\n- &t {name: a, type: redis, url: 'redis://h', labels: *t}\n",
    "targets:\n- &t {name: a, type: redis, url: 'redis://h', <<: *t}\n",
    "global: &g {labels: {x: [1, [2, *g]]}}\ntargets: []\n",
], ids=["sequence", "mapping", "merge", "deep"])
def test_recursive_alias_is_refused(text):
    found, elapsed, _ = _timed_rejection(text)
    assert len(found) == 1 and found[0][0].startswith("line ")
    assert "recursive alias" in found[0][1]
    assert elapsed < 1.0


def test_aliases_that_add_little_are_fine():
    """Shared defaults through anchors: the reason YAML has aliases."""
    text = ("global: {labels: &l {env: prod, team: cache}}\ntargets:\n"
            + "".join(f"- {{name: r{i}, type: redis, url: 'redis://10.0.0.{i}:6379', labels: *l}}\n"
                      for i in range(200)))
    loaded = load(text)
    assert len(loaded.config.targets) == 200
    assert all(dict(t.labels) == {"env": "prod", "team": "cache"} for t in loaded.config.targets)


def test_aliased_problems_are_capped():
    """A thousand aliases of one bad target are not a thousand lines of the same error."""
    text = "targets:\n- &t {name: a, type: redis, url: 'http://h'}\n" + "- *t\n" * 1000
    found = problems(text)
    assert len(found) == 101 and found[-1] == ("", "more problems not shown (stopped after 100)")


# --- merge keys ------------------------------------------------------------------------------

def test_merge_key_override_makes_a_second_target():
    loaded = load("targets:\n- &t {name: a, type: redis, url: 'redis://127.0.0.1:6379'}\n- <<: *t\n  name: b\n")
    a, b = loaded.config.targets
    assert (a.name, b.name) == ("a", "b")
    assert (a.type, a.host, a.port) == (b.type, b.host, b.port) == ("redis", "127.0.0.1", 6379)


def test_merge_keys_from_several_mappings_and_overrides():
    # unknown top-level keys are refused, so the anchors live in the first target
    text = """\
targets:
  - &base {name: a, type: redis, url: 'redis://10.0.0.1:6379', interval: 5s, labels: &team {team: a}}
  - <<: [{url: 'redis://10.0.0.2:6379', interval: 7s}, *base]
    name: b
    labels: {<<: *team, env: prod}
"""
    a, b = load(text).config.targets
    assert a.interval == 5.0 and b.interval == 7.0  # the first mapping listed wins
    assert b.host == "10.0.0.2" and dict(b.labels) == {"team": "a", "env": "prod"}


def test_merged_mapping_that_overrides_a_merged_key_is_merged_again():
    """`d` overrides `team` from `base` and is then merged itself, into a shallower mapping that
    PyYAML builds first (nested mappings are built breadth-first) and that rewrites d's node to
    hold base's pairs: the override must not look like a duplicate then either."""
    text = """\
global: {labels: &base {team: a, env: prod}}
targets:
  - {name: a, type: redis, url: 'redis://h', labels: &d {<<: *base, team: b}}
  - {<<: *d, name: b, type: redis, url: 'redis://h2'}
"""
    found = problems(text)
    assert not any("duplicate key" in m for _, m in found), found
    assert sorted(p for p, _ in found) == ["targets[1].env", "targets[1].team"]  # labels are not target keys
    ok = text.replace("  - {<<: *d, name: b, type: redis, url: 'redis://h2'}\n",
                      "  - {name: b, type: redis, url: 'redis://h2', labels: {<<: *d, x: y}}\n")
    a, b = load(ok).config.targets
    assert dict(a.labels) == {"team": "b", "env": "prod"}
    assert dict(b.labels) == {"team": "b", "env": "prod", "x": "y"}


@pytest.mark.parametrize(("text", "where"), [
    ("targets:\n- &t {name: a, type: redis, url: 'redis://h'}\n- <<: *t\n  name: b\n  name: c\n", "line 5, column 3"),
    ("targets:\n- {<<: {name: a, name: b}, type: redis, url: 'redis://h'}\n", "line 2, column 18"),
], ids=["explicit-twice", "inside-merged-mapping"])
def test_duplicate_explicit_key_is_still_refused(text, where):
    assert problems(text) == [(where, "invalid YAML: duplicate key 'name'")]


# --- the command line: exit 2, a message, never a traceback -----------------------------------

CLI_CASES = {
    "nul-password-file": (FIELDS["password_file"][0](HOSTILE["nul"][0]), "targets[0].password_file: contains a NUL"),
    "surrogate-ca-file": (FIELDS["tls.ca_file"][0](HOSTILE["surrogate"][0]), "targets[0].tls.ca_file: contains U+D800"),
    "digits-label": (FIELDS["label"][0](HOSTILE["digits"][0]), "targets[0].labels.team: is a number with too many"),
    "surrogate-label": (FIELDS["global-label"][0](HOSTILE["surrogate"][0]), "global.labels.env: contains U+D800"),
    "nul-url": (FIELDS["redis-url"][0](HOSTILE["nul"][0]), "targets[0].url: contains a NUL"),
    "bomb": (f"targets:\n- {{name: h, type: http_cache, url: 'http://h/', error_statuses: {bomb()}}}\n",
             "an alias bomb?"),
    "recursive": ("targets: &a [*a]\n", "recursive alias"),
}


@pytest.mark.servers
@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_check_config_exits_2_without_traceback(tmp_path, case):
    text, expected = CLI_CASES[case]
    path = tmp_path / "hostile.yml"
    path.write_text(text, encoding="utf-8")
    res = subprocess.run([sys.executable, "-m", "exporter", "check-config", str(path)], cwd=REPO,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""
    assert res.stderr.startswith(f"{path}: ") and expected in res.stderr, res.stderr


# --- the fuzz ---------------------------------------------------------------------------------

class Emitter:
    """Writes a document as flow-style YAML; with ``rate`` > 0 it adds anchors, aliases of
    earlier anchors (about one value in ``rate``) and merge keys, as ``draw`` decides.

    ``safe`` keeps the document as valid as it was: an alias or a merge only stands where its
    anchor stood (the same ``slot``: labels for labels, a redis target merged into a redis
    target...), never for a name or a whole target (the names must stay unique). Otherwise
    anything goes, with the odd recursive alias and duplicate key.
    """

    def __init__(self, draw, rate: int, safe: bool) -> None:  # noqa: ANN001 - hypothesis' data.draw
        self.draw = draw
        self.rate = rate
        self.safe = safe
        self.count = 0
        self.done: list[tuple[str, str, bool]] = []  # (anchor, slot, is a mapping), closed ones
        self.open: list[str] = []  # anchors whose node is still being written

    def chance(self, one_in: int) -> bool:
        return self.rate > 0 and self.draw(st.integers(0, one_in * self.rate - 1)) == 0

    def value(self, value: object, slot: str = "") -> str:
        aliasable = not self.safe or not (slot.startswith("target") and slot.count(".") == 0
                                          or slot.endswith((".name", ".type")))
        candidates = [a for a, s, _ in self.done if not self.safe or s == slot]
        if aliasable and candidates and self.chance(1):
            return f"*{self.draw(st.sampled_from(candidates))}"
        if not self.safe and self.open and self.chance(40):
            return f"*{self.draw(st.sampled_from(self.open))}"  # recursive
        anchor = None
        if self.rate and self.draw(st.integers(0, 3)) == 0:
            self.count += 1
            anchor = f"a{self.count}"
            self.open.append(anchor)
        if isinstance(value, dict):
            text = self.mapping(value, slot)
        elif isinstance(value, list):
            text = "[" + ", ".join(self.value(v, slot + "[]") for v in value) + "]"
        else:
            text = scalar(value)
        if anchor is None:
            return text
        self.open.remove(anchor)
        self.done.append((anchor, slot, isinstance(value, dict)))
        return f"&{anchor} {text}"

    @staticmethod
    def slot(parent: str, key: object) -> str:
        """Where a value stands, for ``safe``: values of these keys fit wherever the key is."""
        if parent.endswith("labels"):
            return "label value"
        if key in ("labels", "interval", "timeout", "memory_limit", "role", "password_env"):
            return str(key)
        return f"{parent}.{key}"

    def mapping(self, value: dict, slot: str) -> str:
        items = [f"{scalar(k)}: {self.value(v, self.slot(slot, k))}" for k, v in value.items()]
        maps = [a for a, s, is_map in self.done if is_map and (not self.safe or s == slot)]
        if maps and self.chance(1):
            merged = self.draw(st.lists(st.sampled_from(maps), min_size=1, max_size=3))
            items.insert(self.draw(st.integers(0, len(items))),
                         "<<: " + (f"*{merged[0]}" if len(merged) == 1 else "[" + ", ".join(f"*{m}" for m in merged)
                                   + "]"))
        if not self.safe and items and self.chance(5):
            items.append(items[self.draw(st.integers(0, len(items) - 1))])  # a duplicate key (or merge)
        return "{" + ", ".join(items) + "}"


ANY_CHAR = st.characters(exclude_categories=())  # surrogates included
TEXT_CHAR = st.characters(exclude_categories=("Cs",), exclude_characters="\0")  # what a config may hold
hostile_text = st.one_of(
    st.text(ANY_CHAR, max_size=12),
    st.sampled_from(["\0", "a\0b", "\ud800", "x\udfff", "\U0001f600\ud83d", "\u2028", "\x85", "\r\n", "\t"]),
    st.sampled_from([1025, 5000, 20_000]).map(lambda n: "x" * n),
)
RAW = {  # YAML text that the emitter writes as is; by name, so that hypothesis' reprs stay short
    "digits": "9" * 5000, "negative-digits": "-" + "1" * (LIMIT + 1), "digits-at-limit": "7" * LIMIT,
    "hex-digits": "0x" + "f" * 5000, "binary-digits": "0b" + "1" * 20_000, "sexagesimal": "1" * 3000 + ":30",
    "octal-ish": "0o" + "7" * 6000, "float-overflow": "1.0e+99999", "-inf": "-.inf", "nan": ".nan", "null": "~",
    "bad-date": "2001-02-30", "timestamp": "2001-12-14t21:59:43.10-05:00", "int-empty": "!!int ''",
    "bool-maybe": "!!bool maybe", "float-x": "!!float x", "binary": "!!binary aGVsbG8=", "set": "!!set {a, b}",
    "omap": "!!omap [{a: 1}]", "str-tag": "!!str 1", "python-tag": "!!python/name:os.system",
    "custom-tag": "!custom x", "nested-40": "[" * 40 + "]" * 40, "nested-3000": "[" * 3000 + "]" * 3000,
    "nested-maps": "{a: " * 70 + "1" + "}" * 70, "bomb": bomb(anchor="b"), "nested-bomb": nested_bomb(anchor="nb"),
    "small-bomb": bomb(3, 3, anchor="c"), "recursive": "&rr [*rr]", "undefined": "*undefined",
    "complex-key": "{? [a, b] : c}", "pair-in-list": "[a: 1]", "unterminated": "'unterminated",
    "surrogate-pair": '"\\ud800\\udc00"', "nul": '"\\x00"', "merge-scalar": "{<<: 1}",
    "merge-list-of-scalars": "{<<: [1]}",
}
_hostile_raw = st.sampled_from(sorted(RAW)).map(lambda name: Raw(RAW[name]))
_hostile_scalar = st.one_of(hostile_text, _hostile_raw, st.integers(), st.floats(), st.booleans(), st.none())
_hostile = st.one_of(_hostile_scalar, st.lists(st.integers(), max_size=3),
                     st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
# deferred: the strategies below repeat these many times, and a failure would print each in full
hostile_scalar = st.deferred(lambda: _hostile_scalar)  # hashable: fit for mapping keys
hostile = st.deferred(lambda: _hostile)


class Fields:
    """The strategies for each field of a config, either all plausible and valid
    (``Fields(valid=True)``) or mostly plausible with hostile and invalid values mixed in."""

    def __init__(self, valid: bool) -> None:
        self.valid = valid
        text = st.text(TEXT_CHAR, max_size=20)
        self.label_values = self.mix(st.one_of(
            text, st.integers(-10**30, 10**30), st.booleans(), st.floats(), st.dates(),
            st.sampled_from(['q"x', "back\\slash", "new\nline", "ünï", "日本", "\u2028", "tab\t", "\r", "", " "])))
        self.label_names = self.mix(st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
            lambda n: n not in catalog.label_names() and n not in ("job", "instance")),
            st.sampled_from(["job", "store", "__x", "1a", "a-b", ""]), bad=hostile_scalar)
        self.labels = st.dictionaries(self.label_names, self.label_values, max_size=4)
        self.names = self.mix(st.one_of(st.sampled_from(["a", "cache", 'q"x', "b\\s", "ünï", "日本", "a b", "}{,="]),
                                        st.text(TEXT_CHAR, min_size=1, max_size=12).filter(
                                            lambda n: n.strip() and n.isprintable())))
        self.durations = self.mix(st.sampled_from(["15s", "5s", "1m", "2h", "1m30s", 30, 60.5]),
                                  st.sampled_from(["10ms", "fast", "-1s", "", "9" * 400 + "s", -5, float("nan")]))
        self.timeouts = self.mix(st.sampled_from(["100ms", "1s", 2]))
        self.sizes = self.mix(st.one_of(st.sampled_from(["1GiB", "512MiB", "2Gi", "1GB", "64KiB", "32MiB"]),
                                        st.integers(2**16, 2**50)),
                              st.sampled_from(["lots", "-1", -1, 0, 2**70]))
        self.files = self.mix(st.sampled_from([THIS_FILE, "/nonexistent/secret", "relative/path"]), st.just(""))
        self.env_names = self.mix(st.sampled_from(["CE_FUZZ_UNSET", "PATH"]), st.sampled_from(["BAD-NAME", "1X"]))
        hosts = st.sampled_from(["127.0.0.1", "10.0.0.5", "[::1]", "cache.example.com", "xn--nxasmq6b.example"])
        bad_hosts = st.sampled_from(["", "h st", "ünï.example", "[::1"])
        ports = st.integers(1, 65535)
        self.ports = self.mix(ports, st.sampled_from([0, 65536, 99999]))
        self.hosts = self.mix(hosts, bad_hosts)
        self.redis_urls = self.mix(
            st.builds(lambda scheme, h, p, db: f"{scheme}://{h}:{p}/{db}", st.sampled_from(["redis", "valkey"]),
                      hosts, ports, st.integers(0, 20)) | st.sampled_from(["unix:///run/r.sock?db=2", "redis://h"]),
            st.sampled_from(["http://h", "unix://", "redis://u:p@h", "redis://h?db=1", "redis://h/\u00b2", "db:6379"]))
        self.http_urls = self.mix(
            st.builds(lambda scheme, h, p, path: f"{scheme}://{h}:{p}{path}", st.sampled_from(["http", "https"]),
                      hosts, ports, st.sampled_from(["/", "/metrics", "/a?b=c", "/%20x", ""])),
            st.sampled_from(["http://u:p@h/", "http://", "not a url", "ftp://h/", "http://h/sp ace"]))
        statuses = st.one_of(st.integers(100, 599), st.sampled_from(["5xx", "4xx", "500-504"]))
        bad_statuses = st.sampled_from(["504-500", "6xx", "x", True, 700])
        self.statuses = self.mix(st.lists(statuses, min_size=1, max_size=4) | statuses,
                                 st.lists(self.mix(statuses, bad_statuses), max_size=4))

    def mix(self, valid: st.SearchStrategy, *invalid: st.SearchStrategy,
            bad: st.SearchStrategy = hostile) -> st.SearchStrategy:
        """``valid``, or mostly ``valid`` with some ``invalid`` and ``bad`` (hostile) values."""
        if self.valid:
            return valid
        return st.one_of(valid, valid, valid, *invalid, bad)

    def some(self, strategies: dict) -> dict:
        """Optional keys; the mixed kind also gets keys no target has."""
        return strategies if self.valid else {**strategies, "bogus_key": st.integers()}

    def target(self, kind: str, required: dict, optional: dict) -> st.SearchStrategy:
        common = {"labels": self.labels, "interval": self.durations, "timeout": self.timeouts}
        if kind != "memcached" or not self.valid:  # memcached: a password needs a username too
            common["password_env"] = self.env_names
        if kind != "http_cache":
            common |= {"memory_limit": self.sizes, "role": self.mix(st.sampled_from(["cache", "database"]),
                                                                    st.just("primary"))}
        if not self.valid:
            common |= {"password_file": self.files, "username": self.names,
                       "tls": st.fixed_dictionaries({}, optional={
                           "ca_file": self.files, "cert_file": self.files, "key_file": self.files,
                           "server_name": self.names, "insecure_skip_verify": self.mix(st.booleans())})}
        return st.fixed_dictionaries({"name": self.names, "type": self.mix(st.just(kind), st.just("memcache")),
                                      **required}, optional=self.some({**common, **optional}))

    def targets(self) -> st.SearchStrategy:
        kinds = [
            self.target("redis", {"url": self.redis_urls}, {}),
            self.target("memcached", {"address": self.mix(
                st.builds(lambda h, p: f"{h}:{p}", st.sampled_from(["127.0.0.1", "10.0.0.7", "[::1]", "mc.local"]),
                          st.integers(1, 65535)) | st.just("/run/mc.sock"),
                st.sampled_from(["unix:rel", "h:99999", "a b"]))}, {"slabs": self.mix(st.booleans())}),
            self.target("app", {"url": self.http_urls}, {
                "runtime": self.mix(st.sampled_from(["auto", "nodejs", "jvm", "go", "python", "process"]),
                                    st.just("cobol")),
                "heap_limit": self.sizes, "young_generation_reserve": self.sizes}),
            self.target("http_cache", {"url": self.http_urls}, {
                "method": self.mix(st.sampled_from(["GET", "HEAD"]), st.just("POST")),
                "headers": st.dictionaries(self.mix(st.sampled_from(["X-A", "X-Cache-Key"]),
                                                    st.sampled_from(["Authorization", "bad header"]),
                                                    bad=hostile_scalar),
                                           self.mix(st.text(st.characters(min_codepoint=32, max_codepoint=126),
                                                            max_size=10)), max_size=2),
                "error_statuses": self.statuses,
                "bypass": self.mix(st.fixed_dictionaries({"query_param": st.sampled_from(["cb", "nocache"])})),
                "max_redirects": self.mix(st.integers(0, 10), st.integers(11, 20))}),
        ]
        if not self.valid:
            kinds.append(hostile)
        return st.one_of(*kinds)

    def documents(self) -> st.SearchStrategy:
        glob = st.fixed_dictionaries({}, optional=self.some({
            "interval": self.durations, "labels": self.labels, "forecast_window": self.mix(st.just("2h")),
            "max_series": self.mix(st.just(5000)), "max_reply_size": self.sizes}))
        targets = st.lists(self.targets(), min_size=1, max_size=4,
                           unique_by=(lambda t: repr(t.get("name")) if isinstance(t, dict) else repr(t)))
        return st.fixed_dictionaries({"targets": self.mix(targets)}, optional={"global": self.mix(glob)})


DOCUMENTS = st.one_of(st.tuples(Fields(valid=True).documents(), st.just(True)),
                      st.tuples(Fields(valid=False).documents(), st.just(False)))
FUZZ_EXAMPLES = 3000


def check_renders(loaded: LoadResult) -> None:
    """What the scheduler does with every target: render a failed poll's samples; Prometheus'
    own parser must read them back with every label intact."""
    for t in loaded.config.targets:
        samples = Samples()
        samples.add(catalog.CACHE_UP, 0, (("store", t.type),))
        chunks = render_chunks(samples, label_prefix(t.name, t.labels))
        text = "# TYPE cache_up gauge\n" + chunks["cache_up"].decode("utf-8")
        [family] = text_string_to_metric_families(text)
        [sample] = family.samples
        assert sample.labels == {"target": t.name, "store": t.type, **dict(t.labels)}, (t, text)
        assert sample.value == 0


def check(text: str) -> LoadResult | None:
    """parse_config returns or raises ConfigError, within a second; what it accepts renders.

    The second is CPU time of this thread, with the cyclic garbage collector paused: the
    loader's own work, which is what hostile input can blow up. Wall time would also count a
    busy CI machine's other processes, and a full collection walks everything hypothesis keeps
    (seconds, after some thousand examples).
    """
    gc.disable()
    started = time.thread_time()
    try:
        loaded = parse_config(text, "fuzz.yml")
    except ConfigError as exc:
        loaded = None
        assert exc.problems and str(exc).startswith("fuzz.yml")
        str(exc).encode("utf-8")  # the text of an HTTP 400 and of a log line
    finally:
        elapsed = time.thread_time() - started
        gc.enable()
    assert elapsed < 1.0, f"{elapsed:.2f}s CPU for {text[:500]!r}"
    if loaded is not None:
        check_renders(loaded)
    return loaded


stats = {"accepted": 0, "refused": 0, "accepted with aliases": 0}


@pytest.mark.slow
@pytest.mark.timeout(900)  # CPU-bound (~15 s alone): on a machine busy with other work it only takes longer
@settings(max_examples=FUZZ_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])
@given(data=st.data(), generated=DOCUMENTS, rate=st.sampled_from([0, 1, 3, 12]), global_last=st.booleans())
def test_fuzz_any_document_loads_or_is_a_config_error(data, generated, rate, global_last):
    doc, valid = generated
    emitter = Emitter(data.draw, rate, safe=valid)
    head = f"global: {emitter.value(doc['global'], 'global')}\n" if "global" in doc else ""
    targets = doc["targets"]
    if isinstance(targets, list):
        body = "targets:\n" + "".join(
            f"- {emitter.value(t, 'target:' + str(t.get('type')) if isinstance(t, dict) else 'target')}\n"
            for t in targets)
    else:
        body = f"targets: {emitter.value(targets, 'targets')}\n"
    text = body + head if global_last else head + body
    loaded = check(text)
    stats["accepted" if loaded else "refused"] += 1
    if loaded and ("*a" in text or "<<" in text):
        stats["accepted with aliases"] += 1


VALID = document([
    {"name": "r", "type": "redis", "url": "redis://127.0.0.1:6379", "labels": {"team": "a"}},
    {"name": "m", "type": "memcached", "address": "127.0.0.1:11211"},
    {"name": "h", "type": "http_cache", "url": "http://127.0.0.1/", "error_statuses": ["5xx", 429]},
], {"interval": "15s", "labels": {"env": "prod"}})


@pytest.mark.slow
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(position=st.integers(0, len(VALID)), cut=st.integers(0, 20),
       insert=st.one_of(st.text(ANY_CHAR, max_size=20), st.sampled_from(
           ["&x ", "*x", "<<: ", "\n- ", ": ", "{", "[", "\0", "!!int ", "\t", "'", '"\\ud800"', "? ", "---\n",
            "%YAML 1.1\n", "9" * 5000])))
def test_fuzz_spliced_text_loads_or_is_a_config_error(position, cut, insert):
    """Random text spliced into a valid document: YAML syntax errors, tags, stray anchors."""
    check(VALID[:position] + insert + VALID[position + cut:])


@pytest.mark.slow
def test_fuzz_corpus_was_not_all_refused():
    """The fuzz above must reach the renderer, not only the error paths (runs after it)."""
    if stats["accepted"] + stats["refused"] < FUZZ_EXAMPLES // 2:
        pytest.skip("the fuzz test did not run in this session")
    print(stats)
    assert stats["accepted"] >= FUZZ_EXAMPLES // 10, stats
    assert stats["accepted with aliases"] >= FUZZ_EXAMPLES // 100, stats


# --- a real exporter with hostile-but-valid configs ---------------------------------------------

def _closed(name: str, kind: str, **extra: object) -> dict:
    """A target on a loopback port nothing listens on: every poll fails fast with `refused`."""
    port = free_port()
    where = {"redis": {"url": f"redis://127.0.0.1:{port}"}, "memcached": {"address": f"127.0.0.1:{port}"},
             "app": {"url": f"http://127.0.0.1:{port}/metrics"}, "http_cache": {"url": f"http://127.0.0.1:{port}/"}}
    return {"name": name, "type": kind, **where[kind], **extra}


REAL_CONFIGS = {
    "escapes": document([
        _closed('q"uote', "redis", labels={"note": 'a "quoted" \\ back\\slash', "nl": "line1\nline2\r\tend"}),
        _closed("ünïcödé 日本", "memcached", labels={"emoji": "\U0001f600", "sep": "a\u2028b\x85c"}),
    ], fast_global(labels={"env": "prod\\n"})),
    "odd-scalars": document([
        _closed("n", "app", labels={"int": Raw("-" + "9" * 300), "bool": True, "float": Raw("1.0e+999"),
                                    "nan": Raw(".nan"), "date": Raw("2001-12-14"), "hexint": Raw("0x" + "f" * 100)}),
        _closed("}{,=", "http_cache", labels={"empty": "", "space": " ", "braces": "}{\",="}),
    ], fast_global()),
    "anchors-and-merges": (
        f"global: {to_yaml(fast_global(labels={'team': 'x'}))}\n"
        "targets:\n"
        f"  - &base {to_yaml(_closed('a', 'redis', labels={'shared': 'yes'}))}\n"
        "  - <<: *base\n    name: b\n"
        f"  - {{<<: [{{name: c, labels: {{shared: no}}}}, *base]}}\n"
    ),
}


@pytest.mark.parametrize("config", REAL_CONFIGS)
def test_real_exporter_serves_hostile_but_valid_configs(exporter_factory, config):
    text = REAL_CONFIGS[config]
    loaded = check(text)
    assert loaded is not None, "the config must be valid"
    ep = exporter_factory(text)  # waits for /readyz: every target polled once
    m = ep.metrics()
    for t in loaded.config.targets:
        assert m.value("cache_up", target=t.name, **dict(t.labels)) == 0, (t.name, m.text[:2000])
    assert {t["name"] for t in ep.targets()} == {t.name for t in loaded.config.targets}


# --- a running exporter keeps its config through a hostile reload -----------------------------

HOSTILE_RELOADS = {
    "nul-password-file": (FIELDS["password_file"][0](HOSTILE["nul"][0]), b"targets[0].password_file"),
    "surrogate-label": (FIELDS["label"][0](HOSTILE["surrogate"][0]), b"targets[0].labels.team"),
    "digits-ca-file": (FIELDS["tls.ca_file"][0](HOSTILE["digits"][0]), b"targets[0].tls.ca_file"),
    "bomb": (CLI_CASES["bomb"][0], b"an alias bomb?"),
    "recursive": ("targets: &a [*a]\n", b"recursive alias"),
}


def test_sighup_and_reload_with_hostile_configs_keep_the_running_config(exporter_factory):
    good = document([_closed("keep", "redis")], fast_global())
    ep = exporter_factory(good, args=["--web.enable-lifecycle"])
    assert ep.metrics().value("cache_exporter_config_last_reload_successful") == 1

    ep.write_config(HOSTILE_RELOADS["nul-password-file"][0])
    ep.signal(signal.SIGHUP)
    wait_until(lambda: ep.metrics().value("cache_exporter_config_last_reload_successful") == 0, timeout=10,
               message="the failed reload to show")
    assert ep.proc.poll() is None, ep.log()
    assert [t["name"] for t in ep.targets()] == ["keep"]
    ep.wait_polls("keep", 1)  # still polling
    assert "contains a NUL character" in ep.log()

    for name, (text, where) in HOSTILE_RELOADS.items():
        ep.write_config(text)
        started = time.monotonic()
        status, body, _ = ep.get("/-/reload", method="POST")
        assert (status, name) == (400, name), body
        assert time.monotonic() - started < 1.0
        assert b"keeping the running config" in body and where in body, body
        assert ep.get("/healthz", timeout=1)[:2] == (200, b"ok\n")
    m = ep.metrics()
    assert m.value("cache_exporter_config_last_reload_successful") == 0
    assert [t["name"] for t in ep.targets()] == ["keep"]
    assert m.value("cache_up", target="keep") == 0
    assert ep.proc.poll() is None
    assert "Traceback" not in ep.log()

    ep.write_config(good)
    assert ep.get("/-/reload", method="POST")[0] == 200
    assert ep.metrics().value("cache_exporter_config_last_reload_successful") == 1
    assert ep.stop() == 0
