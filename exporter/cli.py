"""The ``cache-exporter`` command line: run, check-config, demo, --version."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter

from exporter import __version__, memory
from exporter.secrets import RedactingFilter
from exporter.targets import DEFAULT_LISTEN

EXIT_CONFIG = 2
SUBCOMMANDS = ("run", "check-config", "audit", "demo")
# `make demo` passes DURATION (the Makefile's default must be this): the filling store runs out ~2 min in.
DEMO_DURATION = 180.0


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    """The record's traceback, if it has one (another handler may have rendered it already)."""
    if record.exc_text:
        return record.exc_text
    return formatter.formatException(record.exc_info) if record.exc_info else None


class _LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        msg = record.getMessage()
        exc = _exception_text(self, record)
        if exc is not None:
            msg += "\n" + exc
        return f'ts={ts}Z level={record.levelname.lower()} logger={record.name} msg={json.dumps(msg)}'


class _JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        exc = _exception_text(self, record)
        if exc is not None:
            payload["exc"] = exc
        return json.dumps(payload)


def setup_logging(level: str = "info", fmt: str = "logfmt") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JSONFormatter() if fmt == "json" else _LogfmtFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cache-exporter",
        description="Polls Redis/Valkey (and more) and warns before a cache runs out of memory.",
    )
    p.add_argument("--version", action="version", version=f"cache-exporter {__version__}")
    sub = p.add_subparsers(dest="command")

    run = sub.add_parser("run", help="poll targets and serve /metrics (the default)")
    # The conventional flag names of Prometheus exporters first; the earlier names stay as aliases.
    run.add_argument("--config.file", "--config", "-c", dest="config", metavar="FILE",
                     help="YAML config; without it, the built-in default (localhost stores)")
    run.add_argument("--web.listen-address", "--listen", "-l", dest="listen", action="append", metavar="[HOST]:PORT",
                     help=f"HTTP listen address, repeatable; ':PORT' listens on every IPv6 and IPv4 address "
                          f"(default {DEFAULT_LISTEN})")
    run.add_argument("--web.config.file", dest="web_config", metavar="FILE",
                     help="exporter-toolkit web config: TLS (tls_server_config), basic auth (basic_auth_users, "
                          "bcrypt), response headers; re-read when it or its certificates change")
    run.add_argument("--web.enable-lifecycle", dest="lifecycle", action="store_true",
                     help="allow POST /-/reload (off by default: it answers 403; SIGHUP always reloads)")
    run.add_argument("--state.dir", dest="state_dir", metavar="DIR",
                     help="keep the forecast history in DIR/forecast-state.json across restarts "
                          "(written every minute and at shutdown); without it, a restart starts the "
                          "forecasts afresh")
    shards = run.add_argument_group(
        "sharding across replicas",
        "M replicas read the same targets and each polls the ones a hash of the target's name gives it "
        "(docs/sharding.md)")
    shards.add_argument("--shard", metavar="N|auto",
                        help="this replica's index, 0..M-1; 'auto' (the default with --total-shards) takes it "
                             "from the trailing -<ordinal> of $POD_NAME, else of the hostname (a StatefulSet pod)")
    shards.add_argument("--total-shards", dest="total_shards", type=int, metavar="M",
                        help="how many replicas share the targets (1: no sharding)")
    quick = run.add_argument_group(
        "targets without a config file",
        "a single store (or a few) from flags, named after their addresses; not together with --config.file")
    quick.add_argument("--redis.addr", dest="redis_addr", action="append", default=[], metavar="URL",
                       help="poll this Redis/Valkey, repeatable: redis://HOST:PORT[/DB], rediss://..., "
                            "unix:///PATH.sock, or HOST:PORT (as redis_exporter's flag)")
    quick.add_argument("--redis.user", dest="redis_user", metavar="NAME",
                       help="ACL user for the --redis.addr targets (needs a password)")
    quick.add_argument("--redis.password-file", dest="redis_password_file", metavar="FILE",
                       help="file holding the password of the --redis.addr targets (re-read at each connection); "
                            "without it, the REDIS_PASSWORD environment variable if set")
    # Declared only to refuse it: left undeclared, argparse would read `--redis.password x` as an
    # abbreviation of --redis.password-file, or print the password in its error.
    quick.add_argument("--redis.password", dest="redis_password", metavar="PASSWORD",
                       help="refused: a password on the command line is visible to every user (ps); "
                            "use --redis.password-file or REDIS_PASSWORD")
    quick.add_argument("--memcached.address", dest="memcached_address", action="append", default=[],
                       metavar="HOST:PORT", help="poll this memcached, repeatable: HOST:PORT, [V6]:PORT or a "
                                                 "unix socket path (as memcached_exporter's flag)")
    run.add_argument("--log.level", "--log-level", dest="log_level", default="info",
                     choices=["debug", "info", "warning", "error"])
    run.add_argument("--log.format", "--log-format", dest="log_format", default="logfmt", choices=["logfmt", "json"])

    check = sub.add_parser("check-config", help="validate a config file; exit 2 if it is invalid")
    check.add_argument("file")

    audit = sub.add_parser(
        "audit", help="poll every target once, report configuration findings; exit non-zero for CI",
        description="Exit codes: 0 no finding at or above --fail-on, 1 findings at or above it, "
                    "2 invalid config (or an --nginx-config file that cannot be parsed), "
                    "3 a target could not be polled.")
    audit.add_argument("--config", "-c", metavar="FILE",
                       help="YAML config; without it, the built-in default (none with only --nginx-config)")
    audit.add_argument("--nginx-config", action="append", default=[], metavar="FILE",
                       help="also check this nginx config (and its includes) for cached error responses; "
                            "repeatable")
    audit.add_argument("--apigee-bundle", action="append", default=[], metavar="PATH",
                       help="also check this Apigee proxy bundle (directory or zip with apiproxy/policies/*.xml) "
                            "for ResponseCache policies that cache error responses; repeatable")
    audit.add_argument("--fail-on", choices=["warning", "critical"], default="warning",
                       help="lowest severity that makes the exit code 1 (default warning)")
    audit.add_argument("--format", choices=["text", "json"], default="text")

    demo = sub.add_parser("demo", help="start throwaway redis-servers, load them, run the exporter")
    demo.add_argument("--duration", type=float, default=DEMO_DURATION,
                      help="seconds to run before cleaning up, long enough by default to see the filling store "
                           f"run out; 0 runs until Ctrl-C (default {DEMO_DURATION:g}, as the Makefile's DURATION)")
    demo.add_argument("--listen", default="127.0.0.1:9611", metavar="[HOST]:PORT")
    return p


def main(argv: list[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    # `run` is the default command: `cache-exporter --config x` means `cache-exporter run --config x`.
    if not args_in or (args_in[0] not in SUBCOMMANDS and args_in[0] not in ("-h", "--help", "--version")):
        args_in.insert(0, "run")
    args = _parser().parse_args(args_in)
    if args.command == "check-config":
        return _check_config(args.file)
    if args.command == "audit":
        return _audit(args)
    if args.command == "demo":
        from exporter.demo import run_demo

        setup_logging("warning")
        return run_demo(args.duration, args.listen)
    return _run(args)


def _audit(args: argparse.Namespace) -> int:
    """Poll the targets once (the built-in default ones only without --config, --nginx-config and
    --apigee-bundle) and check each --nginx-config file and --apigee-bundle; a file or bundle that
    cannot be read at all is an error row and exit 2."""
    setup_logging("error")
    from exporter import apigee, audit
    from exporter.config import ConfigError, LoadResult, default_config, load_config
    from exporter.nginxconf import audit_report

    reports = []
    if args.config or not (args.nginx_config or args.apigee_bundle):
        try:
            loaded = load_config(args.config) if args.config else LoadResult(default_config())
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            return EXIT_CONFIG
        reports = audit.audit_all(loaded.config.targets)
    reports += [audit_report(path) for path in args.nginx_config]
    reports += [apigee.audit_report(path) for path in args.apigee_bundle]
    code = audit.exit_code(reports, args.fail_on)
    formatter = audit.format_json if args.format == "json" else audit.format_text
    print(formatter(reports, args.fail_on, code))
    return code


def _check_config(path: str) -> int:
    from exporter.config import ConfigError, load_config

    try:
        loaded = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    kinds = Counter(t.type for t in loaded.config.targets)
    summary = ", ".join(f"{k}: {n}" for k, n in sorted(kinds.items()))
    templates = loaded.config.templates
    discovered = (", and " + ", ".join(f"{t.name} ({t.type}, discover: {t.kind})" for t in templates)
                  + " to discover") if templates else ""
    print(f"{path}: OK, {len(loaded.config.targets)} targets ({summary}){discovered}")
    return 0


def _run(args: argparse.Namespace) -> int:
    memory.limit_arenas()  # before any thread exists
    setup_logging(args.log_level, args.log_format)
    from exporter.config import ConfigError, LoadResult, default_config, flags_config, load_config
    from exporter.daemon import Daemon
    from exporter.http import parse_listen

    log = logging.getLogger("exporter")
    listen = args.listen or [DEFAULT_LISTEN]
    try:
        for address in listen:
            parse_listen(address)  # first: the default config derives its self-scrape URL from it
    except ValueError as exc:
        print(f"cache-exporter: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.redis_password is not None:
        print("cache-exporter: --redis.password is refused (a password on the command line is visible in ps); "
              "use --redis.password-file FILE or the REDIS_PASSWORD environment variable", file=sys.stderr)
        return EXIT_CONFIG
    from exporter.sharding import from_flags as shard_from_flags

    try:
        shard = shard_from_flags(args.shard, args.total_shards, os.environ)
    except ValueError as exc:
        print(f"cache-exporter: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from_flags = bool(args.redis_addr or args.memcached_address)
    if not args.redis_addr and (args.redis_user or args.redis_password_file):
        print("cache-exporter: --redis.user and --redis.password-file go with --redis.addr", file=sys.stderr)
        return EXIT_CONFIG
    if from_flags and args.config:
        print("cache-exporter: --redis.addr/--memcached.address and --config.file both name targets; "
              "use one: add these targets to the config file, or drop --config.file", file=sys.stderr)
        return EXIT_CONFIG
    try:
        if args.config:
            loaded = load_config(args.config)
        elif from_flags:
            loaded = flags_config(args.redis_addr, args.memcached_address, args.redis_password_file,
                                  args.redis_user)
        else:
            loaded = LoadResult(default_config(listen[0], self_scrape=not args.web_config))
        web = None
        if args.web_config:
            from exporter.webconfig import WebConfigFile  # with bcrypt: only when a web config is given

            web = WebConfigFile(args.web_config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_CONFIG
    for warning in loaded.warnings:
        log.warning("%s", warning)
    try:
        daemon = Daemon(loaded, listen, args.config, args.state_dir, web=web, lifecycle=args.lifecycle,
                        shard=shard)
    except ValueError as exc:
        print(f"cache-exporter: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        print(f"cache-exporter: cannot listen on {', '.join(listen)}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return daemon.run()


if __name__ == "__main__":
    sys.exit(main())
