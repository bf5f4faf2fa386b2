"""exporter.units: sizes and durations as written in config files."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from exporter.units import MAX_DURATION, MAX_SIZE, UnitError, format_duration, parse_duration, parse_size

KiB, MiB, GiB, TiB = 2**10, 2**20, 2**30, 2**40

# --- parse_size: accepted input ----------------------------------------------------------

SIZE_CASES = [
    # IEC
    ("2GiB", 2 * GiB),
    ("512MiB", 512 * MiB),
    ("10KiB", 10 * KiB),
    ("1TiB", TiB),
    ("2gib", 2 * GiB),
    # Kubernetes
    ("2Gi", 2 * GiB),
    ("512Mi", 512 * MiB),
    ("10Ki", 10 * KiB),
    ("3Ti", 3 * TiB),
    # SI, with and without the B
    ("1GB", 10**9),
    ("1G", 10**9),
    ("2gb", 2 * 10**9),
    ("1.5GB", 1_500_000_000),
    ("10k", 10_000),
    ("10K", 10_000),
    ("10KB", 10_000),
    ("8M", 8_000_000),
    ("8MB", 8_000_000),
    ("3TB", 3 * 10**12),
    ("3T", 3 * 10**12),
    # fractions of binary units
    ("0.5GiB", GiB // 2),
    ("1.25GiB", 1_342_177_280),
    ("1.5Ki", 1536),
    # plain bytes
    ("1048576", 1_048_576),
    ("0", 0),
    ("100b", 100),
    ("100B", 100),
    # whitespace is tolerated around and between number and unit
    ("  64MiB  ", 64 * MiB),
    ("64 MiB", 64 * MiB),
    # numbers straight from YAML
    (1_048_576, 1_048_576),
    (0, 0),
    (4096.0, 4096),
    (2**60, 2**60),
]


@pytest.mark.parametrize(("text", "expected"), SIZE_CASES, ids=[repr(c[0]) for c in SIZE_CASES])
def test_parse_size_accepts(text, expected):
    result = parse_size(text)
    assert result == expected
    assert type(result) is int


# Decimal sizes whose value is a whole number of bytes must give exactly that number.
# "8.2MB" is 8,200,000 bytes; float arithmetic (8.2 * 10**6 = 8199999.999...) truncated
# by int() gives one byte less.
EXACT_DECIMAL_CASES = [
    ("8.2MB", 8_200_000),
    ("2.01KB", 2010),
    ("1.001KB", 1001),
    ("1.1GB", 1_100_000_000),
    ("0.58MB", 580_000),
]


@pytest.mark.parametrize(("text", "expected"), EXACT_DECIMAL_CASES, ids=[c[0] for c in EXACT_DECIMAL_CASES])
def test_parse_size_decimal_fractions_are_exact(text, expected):
    assert parse_size(text) == expected


# --- parse_size: rejected input ----------------------------------------------------------

BAD_SIZES = [
    -1,
    -(2**40),
    -0.5,
    True,
    False,
    None,
    [],
    [1024],
    {"size": 1},
    b"1024",
    Decimal("1024"),
    "",
    "   ",
    "abc",
    "GB",
    "1x",
    "1.2.3GB",
    "-1",
    "-1GB",
    "1GiBs",
    "1 2",
    "1e9",
    ".5GB",
    "5.GB",
    "0x10",
    "1_000",
    "1,000",
    "2 GiB extra",
    float("nan"),
    float("inf"),
    float("-inf"),
]


@pytest.mark.parametrize("value", BAD_SIZES, ids=[repr(v) for v in BAD_SIZES])
def test_parse_size_rejects(value):
    with pytest.raises(UnitError, match="size") as info:
        parse_size(value)
    assert isinstance(info.value, ValueError)  # config code catches ValueError


def test_parse_size_error_messages_say_what_is_accepted():
    with pytest.raises(UnitError) as info:
        parse_size("2 gigs")
    assert str(info.value) == "expected a size such as 2GiB, 512MiB, 2Gi, 1GB or a number of bytes"
    with pytest.raises(UnitError) as info:
        parse_size(-5)
    assert str(info.value) == "a size cannot be negative"


def test_parse_size_rejects_overflowing_number_with_unit_error():
    # 400 digits: float() of it is inf; int(inf) raises OverflowError, which is not a
    # UnitError/ValueError, so config validation would crash instead of reporting it.
    with pytest.raises(UnitError):
        parse_size("9" * 400 + "GB")


# --- parse_duration: accepted input -------------------------------------------------------

DURATION_CASES = [
    ("15s", 15.0),
    ("500ms", 0.5),
    ("250ms", 0.25),
    ("1m30s", 90.0),
    ("1m", 60.0),
    ("1h", 3600.0),
    ("1.5h", 5400.0),
    ("1h30m", 5400.0),
    ("1h0m5s", 3605.0),
    ("2h45m30s500ms", 2 * 3600 + 45 * 60 + 30.5),
    ("2d", 172_800.0),
    ("0s", 0.0),
    ("15", 15.0),
    ("0.25", 0.25),
    ("  15s  ", 15.0),
    (15, 15.0),
    (0, 0.0),
    (0.5, 0.5),
]


@pytest.mark.parametrize(("text", "expected"), DURATION_CASES, ids=[repr(c[0]) for c in DURATION_CASES])
def test_parse_duration_accepts(text, expected):
    result = parse_duration(text)
    assert result == pytest.approx(expected)
    assert type(result) is float


BAD_DURATIONS = [
    -1,
    -0.1,
    True,
    False,
    None,
    [],
    ["15s"],
    {"s": 15},
    b"15s",
    Fraction(1, 2),
    "",
    "   ",
    "abc",
    "1x",
    "1m30",  # trailing number without a unit
    "30 s",
    "1.2.3s",
    "-5s",
    "-5",
    "s",
    "ms",
    "1w",
    "1y",
    "1.s",
    "1e3",
    "15s garbage",
    float("nan"),
    float("inf"),
    float("-inf"),
]


@pytest.mark.parametrize("value", BAD_DURATIONS, ids=[repr(v) for v in BAD_DURATIONS])
def test_parse_duration_rejects(value):
    with pytest.raises(UnitError, match="duration"):
        parse_duration(value)


def test_parse_duration_error_message_gives_examples():
    with pytest.raises(UnitError) as info:
        parse_duration("1m30")
    assert str(info.value) == "expected a duration such as 15s, 500ms, 1m30s or 1h"


def test_parse_duration_rejects_overflowing_string():
    # Numbers are checked with math.isfinite, but a 400-digit string becomes float('inf')
    # and is returned as an "infinite interval" instead of being rejected.
    with pytest.raises(UnitError):
        parse_duration("9" * 400 + "s")


def test_parse_duration_rejects_huge_int_with_unit_error():
    # math.isfinite(10**400) raises OverflowError, not UnitError; a YAML `interval:` with a
    # 400-digit integer would therefore crash config validation.
    with pytest.raises(UnitError):
        parse_duration(10**400)


# --- format_duration ----------------------------------------------------------------------

@pytest.mark.parametrize(("seconds", "text"), [(15, "15s"), (15.0, "15s"), (1.5, "1.5s"), (0.1, "0.1s"),
                                               (120, "2m"), (3600, "60m"), (90, "90s"), (0, "0s")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


# --- properties ---------------------------------------------------------------------------

@given(st.integers(min_value=0, max_value=MAX_SIZE))
@example(2**53 + 1)  # first integer a float cannot represent
def test_size_of_plain_integer_string_is_that_integer(n):
    assert parse_size(f"{n}") == n


@given(st.integers(min_value=0, max_value=2**53))
def test_size_of_plain_integer_string_is_that_integer_up_to_2_53(n):
    assert parse_size(f"{n}") == n


@given(st.integers(min_value=0, max_value=MAX_SIZE // 1024))
@example(MAX_SIZE // 1024 - 1)  # ~2**50: the product is exact only without floats
def test_size_in_kib_is_1024_times(n):
    assert parse_size(f"{n}KiB") == n * 1024


@given(st.integers(min_value=0, max_value=2**33), st.integers(min_value=0, max_value=2**53 // 10**9))
def test_size_in_units_within_float_precision(n, m):
    # Values up to 2**53 bytes (8 PiB) are exact; every realistic memory limit is below that.
    assert parse_size(f"{n}KiB") == n * KiB
    assert parse_size(f"{n}Mi") == n * MiB
    assert parse_size(f"{m}GB") == m * 10**9
    assert parse_size(f"{m}G") == m * 10**9


@given(st.integers(min_value=0, max_value=MAX_SIZE))
def test_size_of_int_is_identity(n):
    assert parse_size(n) == n


@given(st.integers(max_value=-1))
def test_size_of_negative_int_is_rejected(n):
    with pytest.raises(UnitError):
        parse_size(n)


@given(st.integers(min_value=0, max_value=int(MAX_DURATION) * 1000))
def test_duration_in_ms(n):
    assert parse_duration(f"{n}ms") == pytest.approx(n / 1000)


@given(st.integers(min_value=0, max_value=int(MAX_DURATION) // 3600 - 1), st.integers(min_value=0, max_value=59),
       st.integers(min_value=0, max_value=59))
def test_duration_compound(h, m, s):
    assert parse_duration(f"{h}h{m}m{s}s") == pytest.approx(h * 3600 + m * 60 + s)
    assert parse_duration(f"{h}") == h


ANY_OBJECT = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),
    st.binary(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
    st.tuples(st.integers(), st.text()),
    st.decimals(allow_nan=True),
    st.fractions(),
    st.complex_numbers(),
    st.from_type(type),
)


@given(st.text())
@example("9" * 400)  # parse_size: float('inf') -> int() raises OverflowError
@example("")
@example("1" * 30 + "TiB")
@settings(max_examples=300)
def test_size_of_arbitrary_text_returns_bytes_or_raises_unit_error(text):
    try:
        result = parse_size(text)
    except UnitError:
        return
    assert type(result) is int and result >= 0


@given(st.text())
@example("9" * 400 + "s")
@example("1m30")
@settings(max_examples=300)
def test_duration_of_arbitrary_text_returns_seconds_or_raises_unit_error(text):
    try:
        result = parse_duration(text)
    except UnitError:
        return
    assert type(result) is float and result >= 0


@given(ANY_OBJECT)
@example(float("nan"))
@example(2**1100)
def test_size_of_arbitrary_object_returns_bytes_or_raises_unit_error(value):
    try:
        result = parse_size(value)
    except UnitError:
        return
    assert type(result) is int and result >= 0


@given(ANY_OBJECT)
@example(float("nan"))
@example(10**400)  # math.isfinite(10**400) raises OverflowError
def test_duration_of_arbitrary_object_returns_seconds_or_raises_unit_error(value):
    try:
        result = parse_duration(value)
    except UnitError:
        return
    assert type(result) is float and math.isfinite(result) and result >= 0


@pytest.mark.parametrize("value", [MAX_SIZE + 1, str(MAX_SIZE + 1), "2000000TiB", "9" * 400])
def test_sizes_above_one_exbibyte_are_refused(value):
    with pytest.raises(UnitError, match="at most 1 EiB"):
        parse_size(value)


@pytest.mark.parametrize("value", [MAX_DURATION + 1, 10**400, "9" * 400 + "s", "4000d"])
def test_durations_above_ten_years_are_refused(value):
    with pytest.raises(UnitError):
        parse_duration(value)
