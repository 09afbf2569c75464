"""Benchmark classrooms, run in worker processes so they never compete with the server's core.

A full classroom reassembles frames like any receiver (SRTP, jitter buffer, NACK, RTCP) but does
not decode: the frame trailer gives its number and send time. A light one (relay/bench/light.py)
only counts packets and frames from the clear RTP headers; a worker of light classrooms keeps its
first classroom full, a spot check that measures latency (the light ones cannot: the stamp is
encrypted) among all the others. The worker answers commands from the runner over a pipe: join N
classrooms at once, report counters, leave.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from aiortc import RTCPeerConnection

from relay.bench.light import HeaderCounters, LightReceiver
from relay.bench.media import read_stamp
from relay.bench.poller import Poller
from relay.bench.targets import Closer, Plan, peer_config, subscribe
from relay.rtc import hooks


@dataclass(slots=True)
class Counters:
    """What one classroom received, reported to the runner as plain data."""

    joined_ns: int = 0
    answered_ns: int = 0  # signalling done: the server's answer applied
    first_ns: int = 0  # first complete video frame
    frames: int = 0
    video_bytes: int = 0
    audio: int = 0
    first_number: int = -1
    last_number: int = -1
    stamped: int = 0  # frames carrying the clip's stamp: the teacher's own encoding
    latencies_ns: list[int] = field(default_factory=list)

    def video(self, data: bytes) -> None:
        """Count one complete video frame and, when it carries the clip's stamp, its latency.
        Frames of a relay-made rendition (`--quality`) are re-encoded and carry no stamp."""
        now = time.monotonic_ns()
        if self.frames == 0:
            self.first_ns = now
        self.frames += 1
        self.video_bytes += len(data)
        stamp = read_stamp(data)
        if stamp is None:
            return
        number, sent_ns = stamp
        if self.stamped == 0:
            self.first_number = number
        self.stamped += 1
        self.last_number = max(self.last_number, number)
        self.latencies_ns.append(now - sent_ns)

    def snapshot(self) -> dict[str, Any]:
        """Counters so far; latencies are handed over once and then forgotten."""
        expected = self.last_number - self.first_number + 1 if self.stamped else 0
        report = {
            "join_s": (self.first_ns - self.joined_ns) / 1e9 if self.frames else None,
            "signalling_s": (self.answered_ns - self.joined_ns) / 1e9 if self.answered_ns else None,
            "frames": self.frames,
            "video_bytes": self.video_bytes,
            "lost": max(expected - self.stamped, 0),
            "audio": self.audio,
            "latencies_ns": self.latencies_ns,
        }
        self.latencies_ns = []
        return report


class Classroom:
    """One receiving peer and its counters."""

    def __init__(self, plan: Plan, poller: Poller | None = None) -> None:
        """A full classroom, or a light one when given the poller that reads its sockets."""
        self.pc = RTCPeerConnection(peer_config(plan))
        # the client's joins cost what the relay's do (one certificate per process, see
        # relay/rtc/hooks.py), whichever server is measured: fifty joins share one core
        hooks.use_process_certificate(self.pc)
        self._light = LightReceiver(poller) if poller is not None else None
        self.counters: Counters | HeaderCounters = (
            Counters() if self._light is None else self._light.counters
        )
        self._close: Closer | None = None

    def _prepare(self, pc: RTCPeerConnection) -> None:
        if self._light is not None:
            self._light.prepare(pc)
        else:
            self._tap(pc)

    def _tap(self, pc: RTCPeerConnection) -> None:
        """Take frames before the decoder: the benchmark must not spend its core decoding."""
        counters = self.counters
        assert isinstance(counters, Counters)
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "video":
                hooks.tap_frames(transceiver.receiver, lambda _c, f: counters.video(f.data))
            else:
                hooks.tap_frames(transceiver.receiver, lambda _c, _f: self._audio())

    def _requested(self) -> None:
        """The join's first request leaves now: join time counts from here (POST → picture)."""
        self.counters.joined_ns = time.monotonic_ns()

    def _audio(self) -> None:
        self.counters.audio += 1

    async def join(self, plan: Plan) -> None:
        self._close = await subscribe(plan, self.pc, self._prepare, self._requested)
        self.counters.answered_ns = time.monotonic_ns()

    async def leave(self) -> None:
        if self._close is not None:
            with contextlib.suppress(Exception):  # the server may be gone already
                await asyncio.wait_for(self._close(), 5)
        if self._light is not None:
            await self._light.close()
        await self.pc.close()


async def _serve(conn: Connection, plan: Plan, receiver: str) -> None:
    """Answer the runner's commands until told to quit."""
    classrooms: list[Classroom] = []
    poller = Poller() if receiver == "light" else None
    loop = asyncio.get_running_loop()
    while True:
        command, arg = await loop.run_in_executor(None, conn.recv)
        if command == "join":
            # light workers keep one full classroom: the latency of every N comes from it
            spot = poller is not None and not classrooms
            fresh = [Classroom(plan, None if spot and i == 0 else poller) for i in range(arg)]
            await asyncio.gather(*(c.join(plan) for c in fresh))
            classrooms += fresh
            conn.send(len(classrooms))
        elif command == "snapshot":
            conn.send([c.counters.snapshot() for c in classrooms])
        elif command == "leave":
            await asyncio.gather(*(c.leave() for c in classrooms))
            classrooms = []
            conn.send(0)
        elif command == "cpu":
            times = os.times()
            conn.send(times.user + times.system)
        else:
            await asyncio.gather(*(c.leave() for c in classrooms))
            if poller is not None:
                await poller.close()
            conn.send(None)
            return


def worker_main(conn: Connection, plan: Plan, cores: set[int], receiver: str = "full") -> None:
    """Process entry point: pin to the client cores and serve commands."""
    os.sched_setaffinity(0, cores)
    hooks.defer_bitrate_estimators()
    asyncio.run(_serve(conn, plan, receiver))
