"""The nginx error-caching check against configs the real nginx (1.22) validates with ``nginx -t``.

Every config a test calls valid is accepted by ``nginx -t``; every config a test calls broken is
refused by it, and for syntax errors our message and line are nginx's own.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import REPO
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nginxlib import check_nginx_text, tokenize

from exporter.audit import CRITICAL, INFO, WARNING
from exporter.nginxconf import (
    CHECK_ERRORS,
    CHECK_NOT_FOUND,
    MAX_FILES,
    MAX_INCLUDE_DEPTH,
    NginxConfigError,
    audit_report,
    check_nginx_config,
    parse_nginx_time,
)

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
BACKEND = "http://127.0.0.1:9"


def nginx_t(conf: Path, timeout: float = 30) -> subprocess.CompletedProcess:
    d = conf.parent
    return subprocess.run(
        [NGINX, "-t", "-p", str(d), "-c", str(conf), "-g", f"pid {d}/nginx.pid; error_log stderr;"],
        capture_output=True, text=True, errors="replace", timeout=timeout,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0)))  # the include cycle crashes nginx


def nginx_accepts(conf: Path) -> None:
    p = nginx_t(conf)
    assert p.returncode == 0, p.stderr


def nginx_error(conf: Path) -> tuple[str, int]:
    """nginx -t's (message, line) for a config it refuses."""
    p = nginx_t(conf)
    assert p.returncode != 0, "nginx accepted a config the test calls broken"
    m = re.search(r"\[emerg\] \d+#\d+: (.*) in (\S+):(\d+)$", p.stderr, re.M)
    assert m, p.stderr
    return m.group(1), int(m.group(3))


def our_error(conf: Path) -> tuple[str, int | None]:
    with pytest.raises(NginxConfigError) as info:
        check_nginx_config(str(conf))
    return str(info.value).split(": ", 1)[1], info.value.line


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def main_conf(d: Path, http_body: str, name: str = "nginx.conf") -> Path:
    """A complete nginx.conf with a proxy cache zone ``z`` and a FastCGI cache zone ``f``."""
    body = textwrap.indent(textwrap.dedent(http_body), "    ")
    return write(d / name, f"events {{}}\nhttp {{\n    proxy_cache_path {d}/cache keys_zone=z:1m;\n"
                           f"    fastcgi_cache_path {d}/fcache keys_zone=f:1m;\n{body}}}\n")


def genuine(d: Path, http_body: str) -> Path:
    conf = main_conf(d, http_body)
    nginx_accepts(conf)
    return conf


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def summary(findings) -> list[tuple[str, str]]:
    return [(f.check, f.severity) for f in findings]


def api_server(cache_valid: str) -> str:
    return f"""
    server {{
        listen 127.0.0.1:8080;
        server_name api.example.com;
        proxy_cache z;
        {cache_valid}
        location /api/ {{ proxy_pass {BACKEND}; }}
    }}
    """


# --- what is flagged --------------------------------------------------------------------------

@pytest.mark.servers
def test_any_is_critical_and_the_message_says_where(tmp_path):
    conf = genuine(tmp_path, api_server("proxy_cache_valid any 1m;"))
    findings = check_nginx_config(str(conf))
    assert summary(findings) == [(CHECK_ERRORS, CRITICAL)]
    message = findings[0].message
    assert message.startswith(f"{conf}:{line_of(conf, 'proxy_cache_valid any 1m')}: `proxy_cache_valid any 1m`")
    assert "server api.example.com, location /api/" in message
    assert f"proxy_cache z at {conf}:{line_of(conf, 'proxy_cache z;')}" in message
    assert "60 s" in message and "502/504" in message


@pytest.mark.servers
def test_200_302_and_404_is_only_info(tmp_path):
    conf = genuine(tmp_path, api_server("proxy_cache_valid 200 302 10m;\n        proxy_cache_valid 404 1m;"))
    findings = check_nginx_config(str(conf))
    assert summary(findings) == [(CHECK_NOT_FOUND, INFO)]
    assert f"{conf}:{line_of(conf, 'proxy_cache_valid 404 1m')}: `proxy_cache_valid 404 1m`" in findings[0].message


@pytest.mark.servers
def test_time_alone_caches_200_301_302_only(tmp_path):
    conf = genuine(tmp_path, api_server("proxy_cache_valid 10m;"))
    assert check_nginx_config(str(conf)) == []


@pytest.mark.servers
def test_short_error_caching_is_a_warning(tmp_path):
    conf = genuine(tmp_path, api_server("proxy_cache_valid 200 1m;\n        proxy_cache_valid 502 504 5s;"))
    findings = check_nginx_config(str(conf))
    assert summary(findings) == [(CHECK_ERRORS, WARNING)]
    assert "502 504 responses for up to 5 s" in findings[0].message


@pytest.mark.servers
@pytest.mark.parametrize("cache_valid,expected", [
    ("proxy_cache_valid 503 10s;", WARNING),  # exactly the microcaching limit
    ("proxy_cache_valid 503 11s;", CRITICAL),
    ("proxy_cache_valid 500 501 502 503 504 1h30m;", CRITICAL),
    ('proxy_cache_valid any "1h 30m";', CRITICAL),
    ("proxy_cache_valid 502 0;\n        proxy_cache_valid any 1m;", CRITICAL),  # 502 not, every other 5xx yes
    ("proxy_cache_valid any 0;\n        proxy_cache_valid 502 1m;", None),  # first match wins: any for 0 s
    ("proxy_cache_valid 200 1m;\n        proxy_cache_valid 404 0;", None),
])
def test_first_matching_entry_decides(tmp_path, cache_valid, expected):
    conf = genuine(tmp_path, api_server(cache_valid))
    errors = [f.severity for f in check_nginx_config(str(conf)) if f.check == CHECK_ERRORS]
    assert errors == ([expected] if expected else [])


@pytest.mark.servers
def test_proxy_cache_off_in_the_location(tmp_path):
    conf = genuine(tmp_path, f"""
    server {{
        server_name api.example.com;
        proxy_cache z;
        proxy_cache_valid any 1m;
        location /live/ {{ proxy_cache off; proxy_pass {BACKEND}; }}
        location /cached/ {{ proxy_pass {BACKEND}; }}
    }}
    """)
    findings = check_nginx_config(str(conf))
    assert summary(findings) == [(CHECK_ERRORS, CRITICAL)]
    assert "location /cached/" in findings[0].message and "/live/" not in findings[0].message


@pytest.mark.servers
def test_inner_cache_valid_replaces_the_outer_list(tmp_path):
    """An inner block's proxy_cache_valid replaces the inherited ones entirely (nginx array merge);
    findings are per location that proxies with the cache on."""
    conf = genuine(tmp_path, f"""
    server {{
        server_name api.example.com;
        proxy_cache z;
        proxy_cache_valid any 1m;
        location /inner/ {{ proxy_cache_valid 200 1m; proxy_pass {BACKEND}; }}
        location /outer/ {{ proxy_pass {BACKEND}; }}
        location /static/ {{ root {tmp_path}; }}
        location /a/ {{
            proxy_pass {BACKEND};
            location /a/b/ {{ proxy_cache_valid 200 1m; proxy_pass {BACKEND}; }}
            location /a/c/ {{ proxy_pass {BACKEND}; }}
        }}
    }}
    """)
    contexts = [re.search(r" in (server .*?) \(", f.message).group(1) for f in check_nginx_config(str(conf))]
    assert contexts == ["server api.example.com, location /outer/", "server api.example.com, location /a/",
                        "server api.example.com, location /a/ > /a/c/"]


@pytest.mark.servers
def test_cache_enabled_only_in_one_location(tmp_path):
    conf = genuine(tmp_path, f"""
    proxy_cache_valid any 1m;
    server {{
        server_name a.example.com b.example.com;
        location /plain/ {{ proxy_pass {BACKEND}; }}
        location /cached/ {{ proxy_cache z; proxy_pass {BACKEND}; }}
        location /if/ {{ proxy_cache z; if ($arg_debug) {{ proxy_pass {BACKEND}; }} }}
        location /le/ {{ proxy_cache z; limit_except GET {{ proxy_pass {BACKEND}; }} }}
    }}
    """)
    findings = check_nginx_config(str(conf))
    assert [re.search(r"location (\S+)", f.message).group(1) for f in findings] == ["/cached/", "/if/", "/le/"]
    assert all("server a.example.com b.example.com" in f.message for f in findings)


@pytest.mark.servers
def test_fastcgi_cache_valid_any(tmp_path):
    conf = genuine(tmp_path, """
    server {
        server_name php.example.com;
        location ~ \\.php$ {
            fastcgi_cache f;
            fastcgi_cache_key $request_uri;
            fastcgi_cache_valid any 30s;
            fastcgi_pass 127.0.0.1:9000;
        }
    }
    """)
    findings = check_nginx_config(str(conf))
    assert summary(findings) == [(CHECK_ERRORS, CRITICAL)]
    assert "`fastcgi_cache_valid any 30s`" in findings[0].message
    assert "location ~ \\.php$" in findings[0].message and "fastcgi_cache f at" in findings[0].message


@pytest.mark.servers
def test_comments_and_quoted_strings(tmp_path):
    conf = genuine(tmp_path, f"""
    server {{
        server_name "quoted.example.com";  # a comment with ; {{ and }}
        proxy_cache z;
        # proxy_cache_valid any 1m;
        proxy_cache_valid 200 "10m";  # proxy_cache_valid any 1m;
        add_header X-Note "a;b{{c#d}} \\"e\\"" always;
        add_header X-Other 'f;g{{h#i' ;
        location /api/ {{ proxy_pass {BACKEND}; }}
        location = /x {{ return 200 "proxy_cache_valid any 1m; }} {{ #"; }}
    }}
    """)
    assert check_nginx_config(str(conf)) == []
    conf = genuine(tmp_path, f"""
    server {{
        server_name quoted.example.com;
        proxy_cache "z";
        proxy_cache_valid "any" '1m'; # caches ; {{ everything
        location "/api/" {{ proxy_pass {BACKEND}; }}
    }}
    """)
    findings = check_nginx_config(str(conf))
    assert summary(findings) == [(CHECK_ERRORS, CRITICAL)]
    assert "`proxy_cache_valid \"any\" '1m'`" in findings[0].message


@pytest.mark.servers
def test_includes_with_glob_relative_to_the_main_file(tmp_path):
    write(tmp_path / "conf.d" / "a-api.conf", f"""
        server {{
            server_name api.example.com;
            include snippets/cache.conf;
            location / {{ proxy_pass {BACKEND}; }}
        }}
    """)
    write(tmp_path / "conf.d" / "b-ok.conf", f"""
        server {{
            server_name ok.example.com;
            proxy_cache z;
            location / {{ proxy_pass {BACKEND}; }}
        }}
    """)
    write(tmp_path / "conf.d" / "c-off.conf.disabled", "this is not nginx syntax {")
    write(tmp_path / "conf.d" / ".hidden.conf", "neither is this {")
    # Relative to the main file's directory (nginx's conf prefix), not to conf.d/.
    snippet = write(tmp_path / "snippets" / "cache.conf", "proxy_cache z;\nproxy_cache_valid any 10m;\n")
    conf = genuine(tmp_path, "include conf.d/*.conf;\ninclude nothing-here/*.conf;\n")
    findings = check_nginx_config(str(conf))
    assert summary(findings) == [(CHECK_ERRORS, CRITICAL)]
    assert findings[0].message.startswith(f"{snippet}:2: `proxy_cache_valid any 10m`")
    assert "server api.example.com, location /" in findings[0].message
    # Run from elsewhere with a relative path: still resolved against the main file's directory.
    rel = os.path.relpath(conf, REPO)
    assert summary(check_nginx_config(rel)) == [(CHECK_ERRORS, CRITICAL)]


@pytest.mark.servers
def test_fragment_files_assume_the_including_context(tmp_path):
    """A sites-enabled file or snippet checked on its own: proxy_cache it does not set is assumed on."""
    site = write(tmp_path / "sites" / "api.conf", f"""
        server {{
            server_name api.example.com;
            proxy_cache_valid any 1m;
            location / {{ proxy_pass {BACKEND}; }}
        }}
    """)
    snippet = write(tmp_path / "snippets" / "microcache.conf", "proxy_cache_valid 200 502 1s;\n")
    off = write(tmp_path / "sites" / "off.conf", f"""
        server {{
            server_name off.example.com;
            proxy_cache off;
            proxy_cache_valid any 1m;
            location / {{ proxy_pass {BACKEND}; }}
        }}
    """)
    conf = genuine(tmp_path, f"""
    proxy_cache z;
    include sites/*.conf;
    server {{
        server_name www.example.com;
        location / {{ include snippets/microcache.conf; proxy_pass {BACKEND}; }}
    }}
    """)
    assert summary(check_nginx_config(str(conf))) == [(CHECK_ERRORS, CRITICAL), (CHECK_ERRORS, WARNING)]
    site_findings = check_nginx_config(str(site))
    assert summary(site_findings) == [(CHECK_ERRORS, CRITICAL)]
    assert "assuming the including context enables it" in site_findings[0].message
    snippet_findings = check_nginx_config(str(snippet))
    assert summary(snippet_findings) == [(CHECK_ERRORS, WARNING)]
    assert f"the top level of {snippet}" in snippet_findings[0].message
    assert check_nginx_config(str(off)) == []


@pytest.mark.servers
def test_uwsgi_and_scgi(tmp_path):
    conf = genuine(tmp_path, f"""
    uwsgi_cache_path {tmp_path}/ucache keys_zone=u:1m;
    scgi_cache_path {tmp_path}/scache keys_zone=s:1m;
    server {{
        location /u/ {{ uwsgi_cache u; uwsgi_cache_key $uri; uwsgi_cache_valid 500 1m; uwsgi_pass 127.0.0.1:9; }}
        location /s/ {{ scgi_cache s; scgi_cache_key $uri; scgi_cache_valid any 2s; scgi_pass 127.0.0.1:9; }}
    }}
    """)
    findings = check_nginx_config(str(conf))
    assert summary(findings) == [(CHECK_ERRORS, CRITICAL), (CHECK_ERRORS, WARNING)]
    assert "`uwsgi_cache_valid 500 1m`" in findings[0].message and "`scgi_cache_valid any 2s`" in findings[1].message
    assert f"server at {conf}:{line_of(conf, 'server {')} (no server_name), location /u/" in findings[0].message


def test_lua_blocks_are_skipped_like_ngx_lua():
    """Text only: Debian's nginx has no Lua module. Braces in Lua strings and comments do not count."""
    findings = check_nginx_text(r"""
        location /lua/ {
            proxy_cache z;
            proxy_cache_valid any 1m;
            access_by_lua_block {
                local t = { "}", '{', [[ } ]], [==[ { ]==] }  -- a } in a comment
                --[[ { ]] ngx.log(ngx.ERR, "\"}")
            }
            proxy_pass http://127.0.0.1:9;
        }
    """, "site.conf")
    assert summary(findings) == [(CHECK_ERRORS, CRITICAL)]
    with pytest.raises(NginxConfigError, match="Lua block on line 1"):
        check_nginx_text("content_by_lua_block { local s = '}' ")


# --- nginx's syntax, message for message --------------------------------------------------------

LONG = "x" * 5000
SYNTAX_CASES = {
    "missing closing brace": "events {}\nhttp {\n    server {\n        listen 8080;\n}\n",
    "extra closing brace": "events {}\nhttp {\n}\n}\n",
    "unterminated double quote": 'events {}\nhttp {\n    add_header X "never closed;\n}\n',
    "unterminated single quote": "events {}\nhttp {\n    add_header X 'never closed;\n}\n",
    "text glued to a quote": 'events {}\nhttp {\n    add_header X "a"b;\n}\n',
    "semicolon alone": "events {}\n;\nhttp {}\n",
    "brace without a name": "events {}\n{\n}\n",
    "file ends in a word": "events {}\nhttp {}\nworker_processes 1",
    "long comment": f"events {{}}\n#{LONG}\nhttp {{}}\n",
    "long quoted string": f'events {{}}\nhttp {{\n    add_header X "{LONG}";\n}}\n',
    "long word": f"events {{}}\nhttp {{\n    add_header X {LONG};\n}}\n",
}


@pytest.mark.servers
@pytest.mark.parametrize("name", SYNTAX_CASES)
def test_syntax_errors_match_nginx(tmp_path, name):
    conf = tmp_path / "nginx.conf"
    conf.write_text(SYNTAX_CASES[name])
    assert our_error(conf) == nginx_error(conf)


@pytest.mark.servers
@pytest.mark.parametrize("length", [4094, 4095, 4096, 4097])
@pytest.mark.parametrize("kind", ["comment", "word", "quoted"])
def test_the_4k_token_buffer_matches_nginx(tmp_path, kind, length):
    """nginx reads configs through a 4096-byte buffer: a longer token or comment is refused."""
    token = {"comment": "#" + "c" * (length - 1) + "\n", "word": "w" * length + ";\n",
             "quoted": '"' + "q" * (length - 2) + '";\n'}[kind]
    prefix = "events {}\nhttp {\n    map $uri $m {\n        default 0;\n        k "
    if kind == "comment":
        prefix = "events {}\nhttp {\n    map $uri $m {\n        default 0;\n"
        token = "        k v;\n" + token
    conf = tmp_path / "nginx.conf"
    conf.write_text(prefix + token + "    }\n}\n")
    if nginx_t(conf).returncode == 0:
        assert check_nginx_config(str(conf)) == []
    else:
        assert our_error(conf) == nginx_error(conf)


@pytest.mark.servers
def test_quotes_escapes_and_variables_tokenize_like_nginx(tmp_path):
    text = "set $a \"x\\\"y\" ; set $b 'it\\'s';\nif ($a = \"b\") { return 200 ${a}{b}; }\nx a}b \\; c;"
    assert [(w, k) for w, k, _ in tokenize(text)] == [
        (["set", "$a", 'x"y'], ";"), (["set", "$b", "it's"], ";"),
        (["if", "($a", "=", "b", ")"], "{"), (["return", "200", "${a}"], "{"), (["b}"], ";"), ([], "}"),
        (["x", "a}b", "\\;", "c"], ";"), ([], "EOF")]
    conf = genuine(tmp_path, f"""
    server {{
        location / {{
            set $a "x\\"y" ; set $b 'it\\'s';
            if ($a = "b") {{ return 200 "${{a}}{{b}}"; }}
            proxy_pass {BACKEND};
        }}
    }}
    """)
    assert check_nginx_config(str(conf)) == []


@pytest.mark.servers
@pytest.mark.parametrize("directive,message", [
    ("proxy_cache_valid any 500ms;", 'invalid time value "500ms" in "proxy_cache_valid"'),
    ("proxy_cache_valid 5xx 1m;", 'invalid status "5xx" in "proxy_cache_valid"'),
    ("proxy_cache_valid 600 1m;", 'invalid status "600" in "proxy_cache_valid"'),
    ("proxy_cache_valid any $ttl;", 'invalid time value "$ttl" in "proxy_cache_valid"'),
    ("proxy_cache z;", '"proxy_cache" directive is duplicate'),
])
def test_invalid_cache_directives_are_config_errors(tmp_path, directive, message):
    conf = main_conf(tmp_path, api_server(directive))
    ours, nginx = our_error(conf), nginx_error(conf)
    assert ours == (message, nginx[1]), nginx
    assert nginx[0].startswith(message.split(" in ")[0])


# --- broken and hostile inputs ----------------------------------------------------------------

@pytest.mark.servers
def test_include_cycle_is_an_error_not_a_recursion(tmp_path):
    write(tmp_path / "a.conf", "include b.conf;\n")
    write(tmp_path / "b.conf", "\ninclude a.conf;\n")
    conf = main_conf(tmp_path, "include a.conf;")
    assert nginx_t(conf, timeout=60).returncode != 0  # nginx itself recurses until it crashes
    message, line = our_error(conf)
    assert line == 2 and message == f"include cycle: {tmp_path}/a.conf -> {tmp_path}/b.conf -> {tmp_path}/a.conf"


@pytest.mark.servers
def test_missing_include_is_an_error_but_an_empty_glob_is_not(tmp_path):
    conf = main_conf(tmp_path, "include missing.conf;")
    message, line = our_error(conf)
    nginx_message, nginx_line = nginx_error(conf)
    assert line == nginx_line and nginx_message.startswith(f'open() "{tmp_path}/missing.conf" failed')
    assert message == f'open() "{tmp_path}/missing.conf" failed: No such file or directory'
    assert check_nginx_config(str(genuine(tmp_path, "include missing/*.conf;"))) == []


@pytest.mark.servers
def test_error_in_an_included_file_names_that_file(tmp_path):
    inc = write(tmp_path / "conf.d" / "bad.conf", "server {\n    listen 8080;\n")
    conf = main_conf(tmp_path, "include conf.d/*.conf;")
    assert our_error(conf) == nginx_error(conf) == ('unexpected end of file, expecting "}"', 3)
    with pytest.raises(NginxConfigError, match=f"^{re.escape(str(inc))}:3: "):
        check_nginx_config(str(conf))


def test_missing_main_file(tmp_path):
    with pytest.raises(NginxConfigError, match="No such file or directory") as info:
        check_nginx_config(str(tmp_path / "nope.conf"))
    assert info.value.line is None


@pytest.mark.servers
def test_ten_megabyte_file_is_refused_quickly(tmp_path):
    """nginx would read it; the checker bounds its work at 4 MiB per file."""
    padding = "# padding to make a huge but valid config\n" * (10 * 2**20 // 42 + 1)
    big = tmp_path / "big.conf"
    big.write_text("events {}\n" + padding + "http {}\n")
    nginx_accepts(big)
    started = time.monotonic()
    with pytest.raises(NginxConfigError, match="above the 4 MiB limit"):
        check_nginx_config(str(big))
    conf = main_conf(tmp_path, "include big.conf;", name="main.conf")
    big.write_text(padding)
    with pytest.raises(NginxConfigError, match=rf"^{re.escape(str(conf))}:\d+: .*above the 4 MiB limit"):
        check_nginx_config(str(conf))
    assert time.monotonic() - started < 5


@pytest.mark.servers
def test_include_depth_and_file_count_are_bounded(tmp_path):
    """Bounds of the checker, not of nginx: nginx accepts these configs."""
    for i in range(MAX_INCLUDE_DEPTH + 1):
        write(tmp_path / f"d{i}.conf", f"include d{i + 1}.conf;\n" if i < MAX_INCLUDE_DEPTH else "")
    deep = main_conf(tmp_path, "include d1.conf;", name="deep.conf")  # d1 .. d10: ten levels
    nginx_accepts(deep)
    assert check_nginx_config(str(deep)) == []
    too_deep = main_conf(tmp_path, "include d0.conf;", name="too_deep.conf")
    nginx_accepts(too_deep)
    with pytest.raises(NginxConfigError, match=f"includes nested more than {MAX_INCLUDE_DEPTH} deep"):
        check_nginx_config(str(too_deep))

    many = tmp_path / "many"
    many.mkdir()
    for i in range(MAX_FILES):
        (many / f"{i:04d}.conf").write_text("")
    wide = main_conf(tmp_path, "include many/*.conf;", name="wide.conf")
    nginx_accepts(wide)
    with pytest.raises(NginxConfigError, match=f"more than {MAX_FILES} config files"):
        check_nginx_config(str(wide))


def test_fifo_and_directory_includes_do_not_hang(tmp_path):
    os.mkfifo(tmp_path / "pipe.conf")
    (tmp_path / "dir.conf").mkdir()
    for target in ("pipe.conf", "dir.conf"):
        conf = main_conf(tmp_path, f"include {target};", name="main.conf")
        with pytest.raises(NginxConfigError, match="is not a regular file"):
            check_nginx_config(str(conf))


def test_deep_nesting_is_an_error_not_a_recursion_error():
    with pytest.raises(NginxConfigError, match="nested more than"):
        check_nginx_text("a {" * 100_000)


# --- nginx times --------------------------------------------------------------------------------

@pytest.mark.parametrize("text,seconds", [
    ("10", 10), ("10s", 10), ("1m", 60), ("1h30m", 5400), ("1h 30m", 5400), ("1d", 86400), ("2w", 1209600),
    ("1M", 2592000), ("1y", 31536000), ("0", 0)])
def test_parse_nginx_time_seconds(text, seconds):
    assert parse_nginx_time(text) == seconds


def test_parse_nginx_time_milliseconds_and_errors():
    assert parse_nginx_time("500ms", is_sec=False) == 500
    assert parse_nginx_time("1s 500ms", is_sec=False) == 1500
    assert parse_nginx_time("2", is_sec=False) == 2000
    for bad in ("500ms", "", "m", "1m1h", "1x", "-1", "1s1s", "99999999999999999999"):
        with pytest.raises(ValueError):
            parse_nginx_time(bad)


# --- fuzzing: never anything but findings or NginxConfigError ---------------------------------

NGINXISH = st.lists(st.sampled_from([
    "proxy_cache", "proxy_cache_valid", "fastcgi_cache_valid", "proxy_pass", "fastcgi_pass", "location", "server",
    "http", "server_name", "if", "limit_except", "map", "include", "content_by_lua_block", "any", "off", "z", "1m",
    "5s", "0", "502", "404", "600", "ms", " ", " ", "\n", "\t", ";", ";", "{", "{", "}", "}", '"', "'", "\\", "#",
    "$", "${", "(", ")", "--", "[[", "]]", "[=[", "\x00", "\xff", "é",
]), max_size=60).map("".join)


def _never_crashes(data: bytes | str) -> None:
    started = time.monotonic()
    try:
        findings = check_nginx_text(data, "fuzz.conf")
    except NginxConfigError as exc:
        assert str(exc).startswith("fuzz.conf:")
    else:
        assert all(f.check in (CHECK_ERRORS, CHECK_NOT_FOUND) for f in findings)
    assert time.monotonic() - started < 2


@settings(max_examples=400, deadline=timedelta(seconds=2), suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000))
def test_random_bytes_parse_or_raise_config_error(data):
    _never_crashes(data)


@settings(max_examples=600, deadline=timedelta(seconds=2), suppress_health_check=[HealthCheck.too_slow])
@given(NGINXISH)
def test_random_nginxish_text_parses_or_raises_config_error(text):
    _never_crashes(text)
    _never_crashes(text.encode("utf-8", "surrogateescape"))


# --- the CLI ------------------------------------------------------------------------------------

def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", "audit", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.servers
def test_cli_audit_nginx_config(tmp_path):
    critical = genuine(tmp_path / "critical", api_server("proxy_cache_valid any 1m;"))
    warning = genuine(tmp_path / "warning", api_server("proxy_cache_valid 502 5s;"))

    text = cli("--nginx-config", str(critical))
    assert text.returncode == 1, text.stdout + text.stderr
    row = next(line for line in text.stdout.splitlines() if line.startswith(f"nginx:{critical}"))
    assert re.match(rf"nginx:{re.escape(str(critical))}\s+critical\s+{CHECK_ERRORS}\s+{re.escape(str(critical))}:",
                    row)
    assert text.stdout.splitlines()[-1].startswith("1 targets: 1 critical, 0 warning")  # no default targets

    as_json = cli("--nginx-config", str(critical), "--nginx-config", str(warning), "--format", "json")
    payload = json.loads(as_json.stdout)
    assert as_json.returncode == payload["exit_code"] == 1
    assert [(t["name"], t["type"], t["address"]) for t in payload["targets"]] == [
        (f"nginx:{critical}", "nginx", str(critical)), (f"nginx:{warning}", "nginx", str(warning))]
    assert [[f["severity"] for f in t["findings"]] for t in payload["targets"]] == [["critical"], ["warning"]]

    assert cli("--nginx-config", str(warning), "--fail-on", "critical").returncode == 0
    assert cli("--nginx-config", str(warning)).returncode == 1


@pytest.mark.servers
def test_cli_unparseable_nginx_config_exits_2(tmp_path):
    good = genuine(tmp_path / "good", api_server("proxy_cache_valid 10m;"))
    bad = write(tmp_path / "bad.conf", "http {\n")
    result = cli("--nginx-config", str(good), "--nginx-config", str(bad), "--format", "json")
    payload = json.loads(result.stdout)
    assert result.returncode == payload["exit_code"] == 2
    by_name = {t["name"]: t for t in payload["targets"]}
    assert by_name[f"nginx:{good}"]["findings"] == [] and by_name[f"nginx:{good}"]["error"] is None
    assert by_name[f"nginx:{bad}"]["reason"] == "config"
    assert by_name[f"nginx:{bad}"]["error"] == f'{bad}:2: unexpected end of file, expecting "}}"'
    report = audit_report(str(bad))
    assert (report.type, report.address, report.reason) == ("nginx", str(bad), "config")


@pytest.mark.servers
def test_cli_with_config_audits_targets_and_nginx(tmp_path):
    from conftest import free_port

    critical = genuine(tmp_path, api_server("proxy_cache_valid any 1m;"))
    config = tmp_path / "audit.yml"
    config.write_text(json.dumps({"targets": [{"name": "gone", "type": "redis",
                                               "url": f"redis://127.0.0.1:{free_port()}"}]}))
    result = cli("--config", str(config), "--nginx-config", str(critical), "--format", "json")
    payload = json.loads(result.stdout)
    assert [t["name"] for t in payload["targets"]] == ["gone", f"nginx:{critical}"]
    assert result.returncode == 3  # the unreachable target, as without --nginx-config
