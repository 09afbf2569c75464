"""`ketang bench`: argument parsing, progress display and result files."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relay.config import ConfigError

if TYPE_CHECKING:
    from relay.bench.runner import BenchOptions

SMOKE = {
    "counts": (3,),
    "seconds": 2.0,
    "warmup": 1.0,
    "clip_seconds": 2.0,
    "width": 640,
    "height": 360,
    "bitrate": 500_000,
    "workers": 1,
}


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register `bench` on the main parser."""
    bench = commands.add_parser(
        "bench", parents=[common], help="measure classrooms per core, join time, latency"
    )
    bench.add_argument(
        "--peer",
        action="append",
        choices=["janus", "ketang-sockets", "ketang-turn", "ketang-workers2"],
        default=[],
        help="also run the same lesson against this server: janus (apt-installed if missing),"
        " ketang-sockets (Ketang with a UDP socket per connection instead of one),"
        " ketang-turn (classrooms only through a coturn on loopback), or ketang-workers2"
        " (`serve --workers 2` with a private redis-server; give it two --server-cores)",
    )
    bench.add_argument(
        "--receiver",
        choices=["light", "full"],
        help="classrooms count RTP headers without decrypting (light, the default) or"
        " reassemble frames as aiortc does (full, the default with --smoke)",
    )
    bench.add_argument(
        "--classrooms", default="10,25,50,100", help="comma-separated N (default 10,25,50,100)"
    )
    bench.add_argument("--seconds", type=float, default=10.0, help="measurement window per N")
    bench.add_argument("--workers", type=int, default=2, help="classroom worker processes")
    bench.add_argument(
        "--results", type=Path, help="results directory (default bench-results/<time>)"
    )
    bench.add_argument(
        "--server-cores", default="0", help="CPUs the server is pinned to (default 0)"
    )
    bench.add_argument(
        "--client-cores", default="1", help="CPUs for the publisher and classrooms (default 1)"
    )
    bench.add_argument(
        "--quality",
        default="",
        help="ketang classrooms join with ?quality= (e.g. 180p, to measure the rendition ladder)",
    )
    bench.add_argument("--smoke", action="store_true", help="a few seconds at N=3 at 360p, for CI")
    bench.set_defaults(run=run_command)


def options_from(args: argparse.Namespace) -> BenchOptions:
    """Bench options from the command line."""
    from relay.bench.runner import BenchOptions  # lazy: parsing must not load the media stack

    results = args.results or Path("bench-results") / time.strftime("%Y%m%d-%H%M%S")
    peers = ("ketang", *dict.fromkeys(args.peer))
    server_cores, client_cores = _cores(args.server_cores), _cores(args.client_cores)
    if args.quality and not re.fullmatch(r"[a-z0-9]+", args.quality):
        raise ConfigError(f"--quality {args.quality!r}: use a layer name such as 180p or low")
    if "ketang-workers2" in peers and shutil.which("redis-server") is None:
        raise ConfigError("--peer ketang-workers2 needs redis-server (Debian: redis-server)")
    if args.smoke:
        return BenchOptions(
            peers=peers,
            workdir=results,
            server_cores=server_cores,
            client_cores=client_cores,
            quality=args.quality,
            receiver=args.receiver or "full",
            **SMOKE,  # type: ignore[arg-type]
        )
    counts = _numbers(args.classrooms, "--classrooms needs positive numbers, e.g. 10,25,50")
    if not counts or min(counts) < 1:
        raise ConfigError("--classrooms needs positive numbers, e.g. 10,25,50")
    if args.seconds <= 0 or args.workers < 1:
        raise ConfigError("--seconds must be positive and --workers at least 1")
    return BenchOptions(
        counts=counts,
        seconds=args.seconds,
        peers=peers,
        workers=args.workers,
        workdir=results,
        server_cores=server_cores,
        client_cores=client_cores,
        quality=args.quality,
        receiver=args.receiver or "light",
    )


def _cores(text: str) -> frozenset[int]:
    """A CPU list such as "0" or "0,1", checked against the CPUs this process may use."""
    cores = frozenset(_numbers(text, f"CPUs {text!r} must be numbers such as 0 or 0,1"))
    if not cores or not cores <= os.sched_getaffinity(0):
        raise ConfigError(f"CPUs {text!r} are not all available here")
    return cores


def progress_bar(stream: Any) -> Any:
    """A progress display: a redrawn bar on a terminal, one line per step otherwise."""

    def show(label: str, fraction: float) -> None:
        filled = int(fraction * 30)
        line = f"[{'#' * filled}{'.' * (30 - filled)}] {fraction * 100:3.0f}% {label}"
        if stream.isatty():
            stream.write("\r" + line.ljust(70) + ("\n" if fraction >= 1 else ""))
        else:
            stream.write(line + "\n")
        stream.flush()

    return show


def run_command(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    """Run the benchmark and write JSON, Markdown and PNG into the results directory."""
    from relay.bench import report
    from relay.bench.runner import run

    options = options_from(args)
    os.sched_setaffinity(0, options.client_cores)  # the publisher runs in this process
    results = asyncio.run(run(options, progress_bar(sys.stderr)))
    paths = report.write(results, options.workdir)
    print(paths["md"].read_text())
    print("results: " + ", ".join(str(p) for p in paths.values()))
    return 0


def _numbers(text: str, message: str) -> tuple[int, ...]:
    """Comma-separated whole numbers, or a usage error with `message`."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(message) from None
