"""`ketang serve --workers 2`: two relay processes behind one HTTP port, one lesson on both."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from relay.cluster.directory import Directory, NodeInfo, connect
from tests.cluster.nodes import ROOT, SECRET, token
from tests.cluster.test_cascade import PLAY_TIMEOUT, ROOM, fps
from tests.conftest import free_port
from tests.media import TAG_CAMERA, CounterVideoTrack, ToneAudioTrack
from tests.peers import Playback, whep_play, whip_publish
from tests.redis_server import RedisServer

CLASSROOMS = 8


def health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/healthz", timeout=2) as reply:
        result: dict[str, Any] = json.load(reply)
        return result


async def live_nodes(redis_url: str, count: int) -> list[NodeInfo]:
    """The cluster's nodes once `count` of them have registered."""
    directory = Directory(connect(redis_url))
    try:
        for _ in range(100):
            nodes = await directory.nodes()
            if len(nodes) >= count:
                return nodes
            await asyncio.sleep(0.1)
        raise TimeoutError(f"fewer than {count} nodes registered")
    finally:
        await directory.aclose()


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as listing:
        return [int(p) for p in listing.read().split()]


@pytest.mark.timeout(120)
async def test_two_workers_share_the_port_and_serve_one_lesson(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KETANG_")}
    env |= {"KETANG_SECRET": SECRET, "KETANG_RECORD": "false"}
    command = [sys.executable, "-m", "relay", "serve", "--workers", "2", "--port", str(port)]
    command += ["--udp-port", "0", "--redis-url", redis_server.url, "--data-dir", str(tmp_path)]
    parent = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    classrooms: list[Playback] = []
    try:
        nodes = await live_nodes(redis_server.url, 2)
        assert len({n.media_port for n in nodes}) == 2  # each worker its own media socket
        workers = children(parent.pid)
        video = CounterVideoTrack(tag=TAG_CAMERA, fps=30)
        teacher = token(ROOM, "teacher", "Ms Zhao")
        publication = await whip_publish(base, ROOM, teacher, "camera", video, ToneAudioTrack())
        for n in range(CLASSROOMS):  # each on a connection of its own, as separate PCs are
            classrooms.append(await whep_play(base, ROOM, token(ROOM, "classroom", f"s{n}")))
        await asyncio.gather(
            *(p.wait_frames(0, 60, TAG_CAMERA, timeout=PLAY_TIMEOUT) for p in classrooms)
        )
        assert min(fps(p) for p in classrooms) >= 25
        served = [health(n.url)["classrooms"] for n in nodes]
        print(f"\nclassrooms (pulls included) per worker: {served}")
        assert sum(served) >= CLASSROOMS
        # each DELETE lands on whichever worker the kernel picks; the other forwards it
        statuses = await asyncio.gather(*(p.close() for p in classrooms))
        classrooms = []
        assert statuses == [200] * CLASSROOMS
        await publication.close()
        # a worker killed outright is started again by the parent
        os.kill(workers[0], signal.SIGKILL)
        for _ in range(50):
            if len(children(parent.pid)) == 2 and workers[0] not in children(parent.pid):
                break
            await asyncio.sleep(0.1)
        restarted = [p for p in children(parent.pid) if p not in workers]
        assert len(restarted) == 1
        workers = children(parent.pid)
    finally:
        await asyncio.gather(*(p.close() for p in classrooms))
        parent.send_signal(signal.SIGTERM)
        await asyncio.to_thread(parent.wait, 40)
    assert parent.returncode == 0
    assert not [p for p in workers if os.path.exists(f"/proc/{p}")]  # no worker outlives it
