"""A classroom's own network: a namespace behind a veth pair, shaped with tbf and iptables.

`tc netem` is not available on our machines; `tbf` limits the rate (with a queue of `latency`
milliseconds, as a DSL or 4G modem has) and an iptables `statistic` rule drops packets at
random inside the namespace, so the host's own firewall is never touched. Everything made here
is removed on exit, also on failure.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

PREFIX = "ktn"
_counter = itertools.count()


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


@functools.cache
def unavailable_reason() -> str | None:
    """Why namespaces cannot be used here (for pytest.skip), or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "tc", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make test installs iproute2 and iptables)"
    probe = f"{PREFIX}probe{os.getpid()}"
    made = _run("ip", "netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    _run("ip", "netns", "del", probe, check=False)
    return None


@dataclass
class Link:
    """One namespace and the veth pair joining it to the host."""

    name: str
    host_dev: str
    ns_dev: str
    host_ip: str
    ns_ip: str

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    def shape(self, rate_kbit: int, loss: float = 0.0, latency_ms: int = 300) -> None:
        """Limit the host-to-namespace direction (the classroom's downlink) to `rate_kbit`
        with a queue of `latency_ms`, and drop `loss` of the packets the namespace receives."""
        self.lift()
        _run(
            "tc", "qdisc", "add", "dev", self.host_dev, "root", "tbf",
            "rate", f"{rate_kbit}kbit", "burst", "10kb", "latency", f"{latency_ms}ms",
        )  # fmt: skip
        if loss > 0:
            _run(*self.command([
                "iptables", "-A", "INPUT", "-m", "statistic", "--mode", "random",
                "--probability", f"{loss}", "-j", "DROP",
            ]))  # fmt: skip

    def lift(self) -> None:
        """Remove the rate limit and the loss."""
        _run("tc", "qdisc", "del", "dev", self.host_dev, "root", check=False)
        _run(*self.command(["iptables", "-F", "INPUT"]), check=False)

    def drops(self) -> tuple[int, int]:
        """Packets dropped so far by (tbf, the random-loss rule)."""
        qdisc = _run("tc", "-s", "qdisc", "show", "dev", self.host_dev).stdout
        found = re.search(r"dropped (\d+)", qdisc)
        tbf = int(found.group(1)) if found else 0
        rules = _run(*self.command(["iptables", "-L", "INPUT", "-v", "-n", "-x"])).stdout
        random = [line.split() for line in rules.splitlines() if "statistic" in line]
        return tbf, sum(int(r[0]) for r in random)


@contextmanager
def link() -> Iterator[Link]:
    """A fresh namespace with a veth pair and private addresses; removed on exit."""
    number = next(_counter)
    tag = f"{os.getpid() % 100000}{number}"
    subnet = 200 + (os.getpid() + number) % 50
    made = Link(f"{PREFIX}{tag}", f"{PREFIX}h{tag}", f"{PREFIX}c{tag}", "", "")
    made.host_ip, made.ns_ip = f"10.{subnet}.{number % 250}.1", f"10.{subnet}.{number % 250}.2"
    try:
        _run("ip", "netns", "add", made.name)
        _run("ip", "link", "add", made.host_dev, "type", "veth", "peer", "name", made.ns_dev)
        _run("ip", "link", "set", made.ns_dev, "netns", made.name)
        _run("ip", "addr", "add", f"{made.host_ip}/24", "dev", made.host_dev)
        _run("ip", "link", "set", made.host_dev, "up")
        _run(*made.command(["ip", "addr", "add", f"{made.ns_ip}/24", "dev", made.ns_dev]))
        _run(*made.command(["ip", "link", "set", made.ns_dev, "up"]))
        _run(*made.command(["ip", "link", "set", "lo", "up"]))
        yield made
    finally:
        _run("ip", "netns", "del", made.name, check=False)
        _run("ip", "link", "del", made.host_dev, check=False)


def leftovers() -> list[str]:
    """Namespaces and interfaces of ours still present: must be empty after a test."""
    names = _run("ip", "netns", "list").stdout.split()
    links = _run("ip", "-o", "link", "show").stdout.split()
    return [n for n in names + links if n.startswith(PREFIX) or n.startswith(f"{PREFIX}h")]
