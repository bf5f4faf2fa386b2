"""``ngx_parse_time``: nginx's time values (``10s``, ``1h30m``, ``500ms``), as nginx accepts and refuses them."""

from __future__ import annotations

_NGX_MAX_INT = 2**63 - 1


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
