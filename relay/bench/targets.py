"""The servers under test, and how a publisher and a classroom reach each of them.

A `Plan` is what a classroom worker process needs to join: it crosses the process boundary, so
it is plain data. Ketang is reached over WHIP/WHEP, Janus over its VideoRoom HTTP API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
from aioice.ice import get_host_addresses
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)
from yarl import URL

from relay import tokens
from relay.bench.redis_server import BenchRedis
from relay.core.turn import turn_credentials

PEER_CONFIG = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
# Ketang as it runs, and the variants measured beside it: a UDP socket per peer connection
# instead of the one media socket, classrooms that reach it only through coturn, and two
# worker processes (`serve --workers 2`) sharing the HTTP port as nodes of a cluster.
KETANG_VARIANTS = ("ketang", "ketang-sockets", "ketang-turn", "ketang-workers2")
# Relay processes of each variant; above 1 they need the bench's own Redis.
WORKERS = {"ketang-workers2": 2}
# Seconds `serve --workers` may take to stop: its workers get up to 30 s for recordings.
STOP_SECONDS = 40.0
ROOM = "bench"
JANUS_ROOM = 4242
Closer = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Plan:
    """How to join the lesson on one server: plain data for worker processes."""

    server: str  # "ketang" or "janus"
    url: str
    secret: str = ""  # ketang: signs each classroom's own token, as every school has one
    feed: int = 0  # janus: publisher feed id
    quality: str = ""  # ketang: the classroom's layer cap, "" for none
    turn: tuple[str, str, str] | None = None  # (url, username, password): relay-only ICE


def peer_config(plan: Plan) -> RTCConfiguration:
    """A classroom's peer connection settings: direct, or only through the plan's TURN."""
    if plan.turn is None:
        return PEER_CONFIG
    url, username, credential = plan.turn
    return RTCConfiguration(
        iceServers=[RTCIceServer(url, username, credential)],
        iceTransportPolicy=RTCIceTransportPolicy.RELAY,
        bundlePolicy=RTCBundlePolicy.MAX_BUNDLE,
    )


async def _post_sdp(url: str, token: str, sdp: str) -> tuple[str, str]:
    """WHIP/WHEP POST; returns (answer, absolute Location)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/sdp"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=sdp, headers=headers) as response,
    ):
        body = await response.text()
        if response.status != 201:
            raise RuntimeError(f"{url}: {response.status} {body.strip()}")
        return body, str(response.url.join(URL(response.headers["Location"])))


async def _delete(url: str, token: str) -> None:
    async with aiohttp.ClientSession() as http:
        await http.delete(url, headers={"Authorization": f"Bearer {token}"})


async def whip_or_whep(
    pc: RTCPeerConnection, url: str, token: str, on_request: Callable[[], None] = lambda: None
) -> Closer:
    """Offer/answer with a Ketang endpoint; returns the DELETE that ends the session.
    `on_request` runs just before the POST: where a WHEP join starts (the offer is ready)."""
    await pc.setLocalDescription(await pc.createOffer())
    on_request()
    answer, location = await _post_sdp(url, token, pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    async def close() -> None:
        await _delete(location, token)

    return close


async def subscribe(
    plan: Plan,
    pc: RTCPeerConnection,
    prepare: Callable[[RTCPeerConnection], None],
    on_request: Callable[[], None],
) -> Closer:
    """Join as a classroom receiving audio + one video; `prepare` runs before media can flow,
    `on_request` when the first request of the join leaves (the clock of join time starts)."""
    if plan.server == "ketang":
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        prepare(pc)
        query = f"?quality={plan.quality}" if plan.quality else ""
        school = f"school {secrets.token_hex(4)}"
        token = tokens.issue(plan.secret.encode(), ROOM, "classroom", school, 86_400)
        return await whip_or_whep(pc, f"{plan.url}/whep/{ROOM}{query}", token, on_request)
    from relay.bench.janus import JanusSubscriber

    subscriber = JanusSubscriber()
    on_request()  # Janus: session, handle and join requests, then its offer and our answer
    await subscriber.start(plan.url, JANUS_ROOM, plan.feed, pc, prepare)
    return subscriber.close


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Resident memory of a process."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def process_tree(pid: int) -> list[int]:
    """The process and all its descendants now, from /proc/<pid>/task/<tid>/children."""
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        with contextlib.suppress(OSError):  # it exited meanwhile
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    pending += [int(child) for child in children.read().split()]
    return tree


def total(measure: Callable[[int], float], pids: list[int]) -> float:
    """The sum of `measure` (cpu_seconds or rss_bytes) over processes; ones gone count 0."""
    result = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            result += measure(pid)
    return result


class KetangServer:
    """A relay in its own process, pinned to the server's cores."""

    def __init__(
        self,
        workdir: Path,
        port: int,
        secret: str,
        cores: set[int],
        quality: str = "",
        variant: str = "ketang",
        client_cores: set[int] | None = None,
    ) -> None:
        self._workdir, self._port, self._secret, self._cores = workdir, port, secret, cores
        self._quality = quality
        self.name = variant
        self._turn = None
        if variant == "ketang-turn":  # coturn beside the classrooms, off the relay's core
            self._turn = TurnServer(workdir, port + 100, secret, client_cores or cores)
        self._workers = WORKERS.get(variant, 1)
        self._redis = BenchRedis(workdir / f"{variant}-redis", cores) if self._workers > 1 else None
        self._nodes: list[str] = []  # each worker's own base URL
        self._log: BinaryIO | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def processes(self) -> list[int]:
        """The relay and its workers, and the cluster's Redis: all that the server costs."""
        return process_tree(self.pid) + ([self._redis.pid] if self._redis is not None else [])

    async def start(self) -> None:
        """Spawn `python -m relay serve` and wait for /healthz (of every worker)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("KETANG_")}
        env["KETANG_SECRET"] = self._secret
        # Janus records nothing: compare forwarding with forwarding (recording is measured apart)
        env["KETANG_RECORD"] = "false"
        env["KETANG_UDP_MUX"] = "false" if self.name == "ketang-sockets" else "true"
        if self._turn is not None:
            self._turn.start()
        command = [sys.executable, "-m", "relay", "serve", "--port", str(self._port)]
        command += ["--udp-port", "0"]
        command += ["--data-dir", str(self._workdir / "ketang-data")]
        if self._redis is not None:
            self._redis.start()
            command += ["--workers", str(self._workers), "--redis-url", self._redis.url]
        self._log = open(self._workdir / f"{self.name}.log", "wb")  # noqa: SIM115 (closed at stop)
        self._process = subprocess.Popen(
            command,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: os.sched_setaffinity(0, self._cores),  # workers inherit it
        )
        await asyncio.to_thread(_wait_http, f"{self.url}/healthz", 30.0)
        if self._redis is not None:
            self._nodes = await _wait_nodes(self._redis.url, self._workers, 30.0)

    async def stop(self) -> None:
        """SIGTERM and reap (the workers with their parent)."""
        if self._process is not None:
            self._process.terminate()
            try:
                await asyncio.to_thread(self._process.wait, STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self._process.kill()
                await asyncio.to_thread(self._process.wait)
        if self._log is not None:
            self._log.close()
        if self._redis is not None:
            self._redis.stop()
        if self._turn is not None:
            self._turn.stop()

    async def spread(self) -> list[int]:
        """Classrooms each worker serves now (as its /healthz counts them); [] for one process."""
        return [await asyncio.to_thread(_classrooms, url) for url in self._nodes]

    def classroom_plan(self) -> Plan:
        turn = self._turn.credentials() if self._turn is not None else None
        return Plan("ketang", self.url, secret=self._secret, quality=self._quality, turn=turn)

    async def publish(self, pc: RTCPeerConnection) -> Closer:
        token = tokens.issue(self._secret.encode(), ROOM, "teacher", "bench", 86_400)
        return await whip_or_whep(pc, f"{self.url}/whip/{ROOM}?source=camera", token)


class TurnServer:
    """Debian's coturn on loopback with REST credentials, relaying to this machine's own
    address, for classrooms that may use nothing but TURN (as behind a school firewall)."""

    def __init__(self, workdir: Path, port: int, secret: str, cores: set[int]) -> None:
        self._workdir, self._port, self._secret, self._cores = workdir, port, secret, cores
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [
            "turnserver", "-n", "--no-cli", "--fingerprint", "--no-tls", "--no-dtls",
            "--listening-ip=127.0.0.1", f"--listening-port={self._port}",
            f"--relay-ip={get_host_addresses(use_ipv4=True, use_ipv6=False)[0]}",
            "--use-auth-secret", f"--static-auth-secret={self._secret}", "--realm=ketang.bench",
            f"--log-file={self._workdir / 'turn.log'}", "--simple-log",
            f"--pidfile={self._workdir / 'turn.pid'}",
        ]  # fmt: skip
        self._process = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=lambda: os.sched_setaffinity(0, self._cores),
        )
        time.sleep(0.5)  # it answers allocations once its listeners are up
        if self._process.poll() is not None:
            raise RuntimeError(f"coturn exited at start: see {self._workdir / 'turn.log'}")

    def credentials(self) -> tuple[str, str, str]:
        username, password = turn_credentials(self._secret, "bench", time.time(), 86_400)
        return f"turn:127.0.0.1:{self._port}?transport=udp", username, password

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(10)


async def _wait_nodes(redis_url: str, count: int, timeout: float) -> list[str]:
    """Wait until `count` nodes registered in the cluster's directory and each answers on its
    own address (the shared port could reach any of them); returns those addresses."""
    from relay.cluster.directory import Directory, connect

    directory = Directory(connect(redis_url))
    try:
        deadline = time.monotonic() + timeout
        while len(nodes := await directory.nodes()) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {len(nodes)} of {count} workers came up in {timeout}s")
            await asyncio.sleep(0.1)
    finally:
        await directory.aclose()
    for node in nodes:
        await asyncio.to_thread(_wait_http, f"{node.url}/healthz", timeout)
    return sorted(node.url for node in nodes)


def _classrooms(url: str) -> int:
    """The classrooms a relay process reports on /healthz."""
    with urllib.request.urlopen(f"{url}/healthz", timeout=5) as reply:
        return int(json.load(reply)["classrooms"])


def _wait_http(url: str, timeout: float) -> None:
    """Poll until `url` answers 200."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class JanusBenchServer:
    """Janus VideoRoom with only the HTTP transport, pinned to the server's cores."""

    name = "janus"

    def __init__(self, workdir: Path, port: int, cores: set[int], bitrate: int) -> None:
        from relay.bench.janus import JanusServer, ensure_janus

        ensure_janus()
        self._server = JanusServer(workdir / "janus", port)
        self._cores = cores
        # the default room caps publishers at 128 kbit/s: allow well above the lesson's rate
        self._room_bitrate = max(4 * bitrate, 4_000_000)
        self._feed = 0
        self._publisher: Any = None

    @property
    def pid(self) -> int:
        return self._server.pid

    def processes(self) -> list[int]:
        return process_tree(self.pid)

    async def spread(self) -> list[int]:
        return []

    async def start(self) -> None:
        from relay.bench.janus import create_room

        await self._server.start()
        pin_all_threads(self.pid, self._cores)
        await create_room(self._server.url, JANUS_ROOM, self._room_bitrate)

    async def stop(self) -> None:
        await self._server.stop()

    def classroom_plan(self) -> Plan:
        return Plan("janus", self._server.url, feed=self._feed)

    async def publish(self, pc: RTCPeerConnection) -> Closer:
        from relay.bench.janus import JanusPublisher

        self._publisher = JanusPublisher()
        self._feed = await self._publisher.start(self._server.url, JANUS_ROOM, pc)
        pin_all_threads(self.pid, self._cores)
        closer: Closer = self._publisher.close
        return closer


def pin_all_threads(pid: int, cores: set[int]) -> None:
    """Pin every thread of a running process; threads it starts later inherit the mask."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # the thread ended meanwhile
            os.sched_setaffinity(int(task), cores)
