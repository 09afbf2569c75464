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


@dataclass
class CloudNat:
    """A school behind its own NAT and a relay VM behind a cloud's 1:1 NAT, joined by a
    router namespace that stands for the internet; the host takes no part."""

    school: str
    router: str
    vm: str
    school_ip: str
    vm_ip: str
    public_ip: str

    def command(self, namespace: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", namespace, *argv]

    def school_firewall(self) -> None:
        """The school lets no UDP out (the relay's media port nor anything else): TCP only."""
        subnet = self.school_ip.rsplit(".", 1)[0] + ".0/24"
        rule = ["iptables", "-I", "FORWARD", "1", "-s", subnet, "-p", "udp", "-j", "DROP"]
        _run(*self.command(self.router, rule))

    def udp_dropped(self) -> int:
        """UDP packets from the school the firewall dropped so far."""
        rule = ["iptables", "-L", "FORWARD", "1", "-v", "-n", "-x"]  # the firewall's rule
        return int(_run(*self.command(self.router, rule)).stdout.split()[0])


def _pair(a: str, b: str, a_dev: str, b_dev: str, a_ip: str, b_ip: str) -> None:
    """A veth pair between namespaces `a` and `b`, addressed /24 and up."""
    _run("ip", "link", "add", a_dev, "netns", a, "type", "veth", "peer", "name", b_dev,
         "netns", b)  # fmt: skip
    for namespace, dev, ip in ((a, a_dev, a_ip), (b, b_dev, b_ip)):
        _run("ip", "netns", "exec", namespace, "ip", "addr", "add", f"{ip}/24", "dev", dev)
        _run("ip", "netns", "exec", namespace, "ip", "link", "set", dev, "up")
        _run("ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up")


@contextmanager
def cloud_nat() -> Iterator[CloudNat]:
    """The classroom's private address is reachable by nobody (its NAT answers only what it
    sent), and the VM's private address is reachable only through its public one."""
    tag = f"{os.getpid() % 100000}{next(_counter)}"
    net = 100 + os.getpid() % 100
    nat = CloudNat(f"{PREFIX}s{tag}", f"{PREFIX}r{tag}", f"{PREFIX}v{tag}",
                   f"10.{net}.1.2", f"10.{net}.2.2", f"198.51.100.{10 + net % 200}")  # fmt: skip
    school_dev, vm_dev = f"{PREFIX}rs{tag}", f"{PREFIX}rv{tag}"
    try:
        for namespace in (nat.school, nat.router, nat.vm):
            _run("ip", "netns", "add", namespace)
        _pair(nat.router, nat.school, school_dev, f"{PREFIX}s{tag}", f"10.{net}.1.1", nat.school_ip)
        _pair(nat.router, nat.vm, vm_dev, f"{PREFIX}v{tag}", f"10.{net}.2.1", nat.vm_ip)
        for namespace, gateway in ((nat.school, f"10.{net}.1.1"), (nat.vm, f"10.{net}.2.1")):
            _run(*nat.command(namespace, ["ip", "route", "add", "default", "via", gateway]))
        router = functools.partial(nat.command, nat.router)
        _run(*router(["sysctl", "-qw", "net.ipv4.ip_forward=1"]))
        nat_rules = [
            ["-t", "nat", "-A", "PREROUTING", "-d", nat.public_ip, "-j", "DNAT",
             "--to-destination", nat.vm_ip],
            ["-t", "nat", "-A", "POSTROUTING", "-s", nat.vm_ip, "-o", school_dev, "-j", "SNAT",
             "--to-source", nat.public_ip],
            ["-t", "nat", "-A", "POSTROUTING", "-s", f"10.{net}.1.0/24", "-o", vm_dev, "-j",
             "MASQUERADE"],
            ["-P", "FORWARD", "DROP"],
            ["-A", "FORWARD", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED,DNAT", "-j",
             "ACCEPT"],
        ]  # fmt: skip
        for rule in nat_rules:
            _run(*router(["iptables", *rule]))
        yield nat
    finally:
        for namespace in (nat.school, nat.router, nat.vm):
            _run("ip", "netns", "del", namespace, check=False)
