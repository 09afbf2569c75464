"""Driving classroom players that run in their own processes (tests/e2e/classroom_process.py)
and reading what they report."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).parents[2]


@dataclass
class ClassroomProcess:
    """The classroom player running in the namespace, and what it reported."""

    process: asyncio.subprocess.Process
    video: list[tuple[float, int, int]] = field(default_factory=list)
    audio: list[float] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            record = json.loads(line)
            if record.get("event") == "ready":
                self.ready.set()
            elif record["kind"] == "video":
                self.video.append((record["t"], record["w"], record["h"]))
            else:
                self.audio.append(record["t"])

    async def stop(self) -> None:
        if self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


def gaps(times: list[float], since: float, until: float) -> list[float]:
    """Silences between arrivals in [since, until], counting its edges: a stream that starts
    late or stops early has a gap there too."""
    inside = [since, *(t for t in times if since <= t <= until), until]
    return [b - a for a, b in itertools.pairwise(inside)]


async def start_classroom(
    url: str, token: str, prefix: list[str] | None = None, servers: str = "[]"
) -> ClassroomProcess:
    """A classroom process playing `url`; `prefix` runs it elsewhere (e.g. ip netns exec),
    `servers` are its ICE servers as JSON."""
    argv = [sys.executable, "-m", "tests.e2e.classroom_process", url, token, servers]
    process = await asyncio.create_subprocess_exec(
        *(prefix or []),
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    return ClassroomProcess(process)
