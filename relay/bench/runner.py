"""Runs the benchmark: one server at a time, N classrooms joining at once, figures per N."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

from aiortc import RTCPeerConnection

from relay.bench.classrooms import worker_main
from relay.bench.media import Clip, ClipAudioTrack, ClipVideoTrack, make_clip
from relay.bench.targets import (
    PEER_CONFIG,
    Closer,
    JanusBenchServer,
    KetangServer,
    Plan,
    cpu_seconds,
    rss_bytes,
    total,
)
from relay.rtc import hooks

Progress = Callable[[str, float], None]


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """Everything a run depends on; reported with the results."""

    counts: tuple[int, ...] = (10, 25, 50, 100)
    seconds: float = 10.0  # measurement window per N
    warmup: float = 3.0  # after the last classroom's first frame, before measuring
    clip_seconds: float = 10.0
    width: int = 1280
    height: int = 720
    bitrate: int = 1_500_000
    peers: tuple[str, ...] = ("ketang",)
    workers: int = 2
    server_cores: frozenset[int] = frozenset({0})
    client_cores: frozenset[int] = frozenset({1})
    workdir: Path = field(default_factory=lambda: Path("bench-results"))
    quality: str = ""  # ketang classrooms join with ?quality= (e.g. 180p: measure the ladder)
    receiver: str = "light"  # classrooms count RTP headers ("light") or reassemble ("full")
    # CPUs the bench may use, taken before it pins its own process to the client cores
    cpus: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))


# A classroom is served when it gets at least this many frames per second of the 30 fps lesson.
SERVED_FPS = 28.0


class Server(Protocol):
    name: str

    def processes(self) -> list[int]: ...
    async def spread(self) -> list[int]: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def classroom_plan(self) -> Plan: ...
    async def publish(self, pc: RTCPeerConnection) -> Closer: ...


class Workers:
    """Classroom worker processes on the client cores, driven over pipes."""

    def __init__(self, plan: Plan, count: int, cores: frozenset[int], receiver: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipes: list[Connection] = []
        self._processes = []
        for _ in range(count):
            mine, theirs = context.Pipe()
            args = (theirs, plan, set(cores), receiver)
            process = context.Process(target=worker_main, args=args)
            process.start()
            self._pipes.append(mine)
            self._processes.append(process)

    async def ask(self, commands: list[tuple[str, Any]]) -> list[Any]:
        """Send one command to each worker and gather the answers."""
        for pipe, command in zip(self._pipes, commands, strict=True):
            pipe.send(command)
        return list(await asyncio.gather(*(asyncio.to_thread(p.recv) for p in self._pipes)))

    async def all(self, command: str, arg: Any = None) -> list[Any]:
        return await self.ask([(command, arg)] * len(self._pipes))

    async def join(self, total: int) -> None:
        """`total` classrooms join at once, spread over the workers."""
        share = [
            total // len(self._pipes) + (i < total % len(self._pipes))
            for i in range(len(self._pipes))
        ]
        await self.ask([("join", n) for n in share])

    async def snapshot(self) -> list[dict[str, Any]]:
        return [c for worker in await self.all("snapshot") for c in worker]

    async def cpu(self) -> float:
        return float(sum(await self.all("cpu")))

    async def close(self) -> None:
        await self.all("quit")
        for process in self._processes:
            await asyncio.to_thread(process.join, 10)


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100), or None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(int(q / 100 * len(ordered)), len(ordered) - 1)]


async def publish(server: Server, clip: Clip) -> tuple[RTCPeerConnection, Closer, ClipVideoTrack]:
    """The teacher: pre-encoded clip, restarted at its keyframe on PLI."""
    pc = RTCPeerConnection(PEER_CONFIG)
    video = ClipVideoTrack(clip)
    pc.addTransceiver(ClipAudioTrack(clip), direction="sendonly")
    sender = pc.addTransceiver(video, direction="sendonly").sender
    hooks.on_keyframe_request(sender, video.keyframe)
    return pc, await server.publish(pc), video


async def wait_all_joined(
    workers: Workers, total: int, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """Snapshots once every classroom has its first frame (join times are final then)."""
    deadline = time.monotonic() + timeout
    while True:
        snaps = await workers.snapshot()
        if len(snaps) == total and all(s["frames"] for s in snaps):
            return snaps
        if time.monotonic() > deadline:
            joined = sum(1 for s in snaps if s["frames"])
            raise RuntimeError(f"only {joined} of {total} classrooms got a picture in {timeout}s")
        await asyncio.sleep(0.2)


def server_cpu(server: Server) -> float:
    """CPU seconds of all the server's processes so far."""
    return total(cpu_seconds, server.processes())


def server_rss(server: Server) -> int:
    """Resident memory of all the server's processes."""
    return int(total(rss_bytes, server.processes()))


async def measure(
    server: Server, workers: Workers, n: int, options: BenchOptions, teacher: ClipVideoTrack
) -> dict[str, Any]:
    """One N: join at once, warm up, measure the window."""
    await workers.join(n)
    joined = await wait_all_joined(workers, n)
    joins = [s["join_s"] for s in joined]
    signalling = [s["signalling_s"] for s in joined]
    await asyncio.sleep(options.warmup)
    before, server0, client0, t0 = (
        await workers.snapshot(),
        server_cpu(server),
        await workers.cpu(),
        time.monotonic(),
    )
    keyframes = teacher.keyframe_requests
    await asyncio.sleep(options.seconds)
    keyframes = teacher.keyframe_requests - keyframes
    after, server1, client1, t1 = (
        await workers.snapshot(),
        server_cpu(server),
        await workers.cpu(),
        time.monotonic(),
    )
    rss = server_rss(server)
    spread = await server.spread()
    await workers.all("leave")
    row = summarize(n, t1 - t0, joins, before, after, server1 - server0, client1 - client0, rss)
    row["signalling_p95_ms"] = (percentile(signalling, 95) or 0) * 1000
    row["teacher_keyframes_per_s"] = keyframes / (t1 - t0)
    row["per_worker"] = "+".join(map(str, spread)) or None
    return row


def summarize(
    n: int,
    dt: float,
    joins: list[float],
    before: list[dict[str, Any]],
    after: list[dict[str, Any]],
    server_cpu: float,
    client_cpu: float,
    rss: int,
) -> dict[str, Any]:
    """The figures of one N from counters at both ends of the window."""
    fps = [(a["frames"] - b["frames"]) / dt for a, b in zip(after, before, strict=True)]
    latencies = [ns / 1e6 for a in after for ns in a["latencies_ns"]]
    return {
        "classrooms": n,
        "cpu_ms_per_s": server_cpu / dt * 1000,
        "cpu_ms_per_s_per_classroom": server_cpu / dt * 1000 / n,
        "client_cpu_cores": client_cpu / dt,
        "served": sum(1 for f in fps if f >= SERVED_FPS),
        "fps_min": min(fps),
        "fps_mean": statistics.fmean(fps),
        "video_mbps_mean": statistics.fmean(
            (a["video_bytes"] - b["video_bytes"]) * 8 / dt / 1e6
            for a, b in zip(after, before, strict=True)
        ),
        "frames_lost": sum(a["lost"] - b["lost"] for a, b in zip(after, before, strict=True)),
        "audio_pps_mean": statistics.fmean(
            (a["audio"] - b["audio"]) / dt for a, b in zip(after, before, strict=True)
        ),
        "join_p50_ms": (percentile(joins, 50) or 0) * 1000,
        "join_p95_ms": (percentile(joins, 95) or 0) * 1000,
        "latency_p50_ms": percentile(latencies, 50),
        "latency_p99_ms": percentile(latencies, 99),
        "rss_bytes": rss,
    }


async def idle_cpu(server: Server, seconds: float) -> float:
    """Server CPU (ms/s) with the teacher publishing and nobody watching."""
    start, t0 = server_cpu(server), time.monotonic()
    await asyncio.sleep(seconds)
    return (server_cpu(server) - start) / (time.monotonic() - t0) * 1000


async def bench_server(
    server: Server, clip: Clip, options: BenchOptions, progress: Progress, step: float, done: float
) -> dict[str, Any]:
    """All N for one server; the server runs on its own cores for the whole run."""
    await server.start()
    try:
        pc, unpublish, teacher = await publish(server, clip)
        plan = server.classroom_plan()
        workers = Workers(plan, options.workers, options.client_cores, options.receiver)
        try:
            progress(f"{server.name}: idle", done)
            baseline = {
                "cpu_ms_per_s": await idle_cpu(server, 3.0),
                "rss_bytes": server_rss(server),
            }
            rows = []
            for i, n in enumerate(options.counts):
                progress(f"{server.name}: {n} classrooms", done + i * step)
                rows.append(await measure(server, workers, n, options, teacher))
            return {"baseline": baseline, "rows": rows}
        finally:
            await workers.close()
            await unpublish()
            await pc.close()
    finally:
        await server.stop()


def make_server(name: str, options: BenchOptions, port: int) -> Server:
    """The server object for a peer name."""
    if name.startswith("ketang"):
        return KetangServer(
            options.workdir,
            port,
            secrets.token_urlsafe(32),
            set(options.server_cores),
            options.quality,
            variant=name,
            client_cores=set(options.client_cores),
        )
    return JanusBenchServer(options.workdir, port, set(options.server_cores), options.bitrate)


async def run(options: BenchOptions, progress: Progress) -> dict[str, Any]:
    """The whole benchmark; returns the results document."""
    options.workdir.mkdir(parents=True, exist_ok=True)
    progress("encoding the lesson clip", 0.0)
    clip = make_clip(options.clip_seconds, options.width, options.height, bitrate=options.bitrate)
    results: dict[str, Any] = {}
    step = 1.0 / (len(options.peers) * len(options.counts))
    for index, name in enumerate(options.peers):
        server = make_server(name, options, 18600 + index)
        results[name] = await bench_server(
            server, clip, options, progress, step, index * len(options.counts) * step
        )
    progress("done", 1.0)
    return {
        "clip": {
            "width": clip.width,
            "height": clip.height,
            "fps": clip.fps,
            "video_bitrate": clip.video_bitrate,
        },
        "machine": {
            "cpus": options.cpus,
            "server_cores": sorted(options.server_cores),
            "client_cores": sorted(options.client_cores),
            "python": sys.version.split()[0],
        },
        "options": {
            "counts": list(options.counts),
            "seconds": options.seconds,
            "warmup": options.warmup,
            "workers": options.workers,
            "receiver": options.receiver,
        },
        "servers": results,
    }
