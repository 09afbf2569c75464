"""All media of a relay process on one UDP socket (relay/rtc/udpmux.py), counted from /proc.

The relay runs in its own process so that the sockets counted are its own, not the test's
aiortc peers'. The same lesson with `udp_mux = false` shows what the count would be without
the mux: the test tells the two apart, so it proves the setting.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from relay import tokens
from tests.conftest import free_port
from tests.media import TAG_CAMERA, CounterVideoTrack, ToneAudioTrack
from tests.peers import Playback, whep_play, whip_publish

ROOT = Path(__file__).parents[2]
ROOM = "one-port"
SECRET = "media-socket-secret-" + "x" * 32


def udp_sockets(pid: int) -> list[int]:
    """Local ports of the UDP sockets process `pid` holds (its fds matched to /proc/net/udp)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{fd}") if fd.isdigit() else ""
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    for table in ("udp", "udp6"):
        with open(f"/proc/{pid}/net/{table}") as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if fields[9] in inodes:
                    ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(ports)


def health(base: str) -> dict[str, object]:
    with urllib.request.urlopen(f"{base}/healthz", timeout=2) as reply:
        result: dict[str, object] = json.load(reply)
        return result


async def wait_health(base: str, process: subprocess.Popen[bytes]) -> dict[str, object]:
    for _ in range(150):
        if process.poll() is not None:
            raise RuntimeError(f"relay exited with {process.returncode}")
        try:
            return await asyncio.to_thread(health, base)
        except OSError:
            await asyncio.sleep(0.1)
    raise TimeoutError("relay did not answer /healthz")


@asynccontextmanager
async def relay_process(tmp_path: Path, udp_mux: bool) -> AsyncIterator[tuple[str, int, int]]:
    """A relay in its own process; yields (base URL, pid, media port from /healthz)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KETANG_")}
    env |= {
        "KETANG_SECRET": SECRET,
        "KETANG_RECORD": "false",
        "KETANG_UDP_MUX": str(udp_mux).lower(),
    }
    command = [sys.executable, "-m", "relay", "serve", "--port", str(port), "--udp-port", "0"]
    command += ["--data-dir", str(tmp_path / "data")]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        media_port = (await wait_health(base, process))["media_udp_port"]
        yield base, process.pid, int(media_port) if isinstance(media_port, int) else 0
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 20)


def token(role: str, name: str) -> str:
    return tokens.issue(SECRET.encode(), ROOM, role, name, 3600)


async def lesson_sockets(base: str, pid: int, classrooms: int) -> list[int]:
    """Publish, let `classrooms` play at full rate, and list the relay's UDP sockets then."""
    video = CounterVideoTrack(tag=TAG_CAMERA, width=160, height=120)
    publication = await whip_publish(base, ROOM, token("teacher", "t"), "camera", video,
                                     ToneAudioTrack())  # fmt: skip
    players: list[Playback] = []
    try:
        for n in range(classrooms):
            players.append(await whep_play(base, ROOM, token("classroom", f"school {n}")))
        # every classroom plays: 30 new frames each, and audio (the 20 decoders share this
        # test's one core with the teacher's encoder, so their frame rate says little)
        await asyncio.gather(*(p.wait_frames(0, 30, TAG_CAMERA, timeout=30) for p in players))
        assert all(p.audio.count > 0 for p in players)
        return udp_sockets(pid)
    finally:
        await asyncio.gather(*(p.close() for p in players))
        await publication.close()


@pytest.mark.timeout(120)
async def test_twenty_classrooms_play_through_the_relays_one_udp_socket(tmp_path: Path) -> None:
    async with relay_process(tmp_path, udp_mux=True) as (base, pid, media_port):
        assert udp_sockets(pid) == [media_port]  # bound at start, before any session
        assert await lesson_sockets(base, pid, classrooms=20) == [media_port]


@pytest.mark.timeout(60)
async def test_without_the_mux_every_connection_binds_its_own_socket(tmp_path: Path) -> None:
    async with relay_process(tmp_path, udp_mux=False) as (base, pid, media_port):
        assert media_port == 0 and udp_sockets(pid) == []
        assert len(await lesson_sockets(base, pid, classrooms=2)) >= 3  # teacher + 2
