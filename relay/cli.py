"""The `ketang` command: the one place that reads the process environment and builds a Config."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import NoReturn, TextIO

from relay.config import Config, ConfigError, base_url, load
from relay.core.errors import BadRequest, NotFound
from relay.tokens import ALL_ROOMS, ROLES, issue, load_secret

PROG = "ketang"
# Exit status for usage and configuration errors, as argparse uses.
EXIT_USAGE = 2
# Seconds the demo links `serve` prints stay valid: a working day at the terminal, while a
# copy left in scrollback or a log does not open the admin page for a week.
LINK_TTL = 12 * 3600


class UsageError(Exception):
    """A command line argparse rejected; main reports it like a config error."""


class _Parser(argparse.ArgumentParser):
    """Argument parser that raises instead of exiting, so main() decides the exit status."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise UsageError(message)


def _common() -> _Parser:
    """Options every subcommand takes; SUPPRESS keeps a subcommand from erasing the global value."""
    common = _Parser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="FILE",
        help="TOML config file (default: $KETANG_CONFIG)",
    )
    return common


def _add_serve(commands: argparse._SubParsersAction[_Parser], common: _Parser) -> None:
    serve = commands.add_parser("serve", parents=[common], help="run the relay")
    serve.add_argument("--host", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default 8080)")
    serve.add_argument(
        "--data-dir", type=Path, metavar="DIR", help="data directory (default ./data)"
    )
    serve.add_argument("--redis-url", help="redis://, rediss:// or unix:// URL for shared state")
    serve.add_argument("--tls-cert", type=Path, metavar="FILE", help="PEM certificate chain")
    serve.add_argument("--tls-key", type=Path, metavar="FILE", help="PEM private key")
    serve.add_argument(
        "--self-signed",
        action="store_true",
        default=None,
        help="serve HTTPS with a generated self-signed certificate",
    )
    serve.add_argument("--public-url", help="base URL for printed links (e.g. behind a proxy)")
    serve.add_argument(
        "--public-ip", metavar="ADDR", help="address classrooms reach the relay on (1:1 NAT)"
    )
    serve.add_argument(
        "--udp-port",
        type=int,
        metavar="PORT",
        help="the one UDP port for all media (default 8081; 0: any free port)",
    )
    serve.add_argument(
        "--node-url", metavar="URL", help="with --redis-url: the URL other nodes reach this one on"
    )
    serve.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="with --redis-url: N relay processes on this machine sharing the HTTP port",
    )
    serve.set_defaults(run=_run_serve)


def _add_token(commands: argparse._SubParsersAction[_Parser], common: _Parser) -> None:
    token = commands.add_parser("token", parents=[common], help="print one signed token")
    token.add_argument("room", metavar="ROOM", help=f"room name, or {ALL_ROOMS!r} for admins")
    token.add_argument("--role", required=True, choices=sorted(ROLES))
    token.add_argument("--name", help="display name (default: the role)")
    token.add_argument(
        "--ttl", type=int, dest="token_ttl", metavar="SECONDS", help="lifetime (default 7 days)"
    )
    token.add_argument(
        "--data-dir", type=Path, metavar="DIR", help="data directory holding the secret"
    )
    token.set_defaults(run=_run_token)


def _add_report(commands: argparse._SubParsersAction[_Parser], common: _Parser) -> None:
    report = commands.add_parser(
        "report", parents=[common], help="per-school lesson quality over a period"
    )
    report.add_argument("--from", dest="since", type=_date, required=True, metavar="YYYY-MM-DD")
    report.add_argument("--to", dest="until", type=_date, required=True, metavar="YYYY-MM-DD")
    report.add_argument("--school", default="", help="only schools whose name contains this")
    report.add_argument("--csv", type=Path, metavar="FILE", help="also write the table as CSV")
    report.add_argument(
        "--data-dir", type=Path, metavar="DIR", help="data directory (default ./data)"
    )
    report.set_defaults(run=_run_report)


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None


def _run_report(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Print which schools had poor lessons, how often and since when; optionally CSV."""
    from monitoring.report import load, print_table, rows, write_csv

    config = _load(args, ("data_dir",), env)
    lessons = load(config.storage.data_dir / "quality")
    table = rows(lessons, args.since, args.until, args.school)
    print_table(table, sys.stdout)
    if args.csv is not None:
        with args.csv.open("w", newline="", encoding="utf-8") as out:
            write_csv(table, out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; `bench` and `library` add their own subparsers."""
    common = _common()
    parser = _Parser(prog=PROG, parents=[common], description="Ketang live-classroom relay")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(commands, common)
    _add_token(commands, common)
    from relay.bench.command import add_parser as add_bench

    add_bench(commands, common)
    from recorder.command import add_parser as add_library

    add_library(commands, common).set_defaults(run=_run_library)
    _add_report(commands, common)
    return parser


# Flags that map onto config fields of the same name, per subcommand.
_SERVE_FLAGS = (
    "host",
    "port",
    "data_dir",
    "redis_url",
    "tls_cert",
    "tls_key",
    "self_signed",
    "public_url",
    "public_ip",
    "udp_port",
    "node_url",
    "workers",
)
_TOKEN_FLAGS = ("data_dir", "token_ttl")


def _load(args: argparse.Namespace, names: Sequence[str], env: Mapping[str, str]) -> Config:
    """Config for a subcommand: --config or $KETANG_CONFIG, the environment, then its flags."""
    flags = {name: getattr(args, name) for name in names}
    return load(getattr(args, "config", None), env, flags)


def print_links(
    config: Config, secret: bytes, room: str = "demo", out: TextIO | None = None
) -> None:
    """Print ready-to-use page links for a demo lesson, so a first lesson needs no other tool.
    They carry tokens, admin's among them: they live LINK_TTL, not a week."""
    out = out or sys.stdout
    base, ttl = base_url(config.server), LINK_TTL
    teacher = issue(secret, room, "teacher", "Teacher", ttl)
    admin = issue(secret, ALL_ROOMS, "admin", "admin", ttl)
    classrooms = [issue(secret, room, "classroom", f"Classroom {n}", ttl) for n in (1, 2)]
    lines = [
        f"Ketang relay at {base}",
        f"  Admin overview:     {base}/admin?token={admin}",
        f"  Course library:     {base}/library?token={admin}",
        f"  Teacher studio:     {base}/teach/{room}?token={teacher}",
        *(
            f"  Classroom {n} player: {base}/class/{room}?token={token}"
            for n, token in enumerate(classrooms, 1)
        ),
        f"  WHIP/WHEP clients:  {base}/whip/{room}?source=camera, {base}/whep/{room}"
        " (Authorization: Bearer <token from `ketang token`>)",
    ]
    print("\n".join(lines), file=out, flush=True)


def _run_serve(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run the relay until SIGINT/SIGTERM, after printing links to it."""
    config = _load(args, _SERVE_FLAGS, env)
    secret = load_secret(config.auth, config.storage.data_dir)
    if sys.stdout.isatty():  # a person at `make run`; a service's log gets no tokens
        print_links(config, secret)
    else:
        print(f"Ketang relay at {base_url(config.server)} (links: `ketang token`)", flush=True)
    from relay.logs import configure

    configure()
    if config.cluster.workers > 1:
        from relay.cluster.workers import run_workers

        return run_workers(config, secret, env)
    from relay.app import serve  # lazy: `ketang token` must not import the media stack

    asyncio.run(serve(config))
    return 0


def _run_library(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """`ketang library ACTION`: the action runs on the configured data directory."""
    config = _load(args, ("data_dir",), env)
    try:
        result: int = args.action_run(args, config.storage.data_dir)
    except NotFound as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return result


def _run_token(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Print one token, signed with the same secret `serve` uses."""
    config = _load(args, _TOKEN_FLAGS, env)
    secret = load_secret(config.auth, config.storage.data_dir)
    name = args.name if args.name is not None else args.role
    print(issue(secret, args.room, args.role, name, config.auth.token_ttl))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `ketang` and `python -m relay`; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        run: Callable[[argparse.Namespace, Mapping[str, str]], int] = args.run
        return run(args, os.environ)
    except (UsageError, ConfigError, BadRequest) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
