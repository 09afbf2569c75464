"""Classrooms of one lesson spread over the nodes by load: a busy node answers a new
classroom's POST with 307 to the least busy node that takes classrooms directly."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.cluster.nodes import Node, start_node
from tests.cluster.test_cascade import PLAY_TIMEOUT, fps, join, teach
from tests.media import TAG_CAMERA
from tests.peers import Playback
from tests.redis_server import RedisServer

GAP = {"KETANG_PLACEMENT_GAP": "1"}


@pytest.mark.timeout(120)
async def test_a_busy_node_sends_new_classrooms_to_the_least_busy_one(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    nodes: list[Node] = []
    classrooms: list[Playback] = []
    try:
        for name in ("a", "b"):
            nodes.append(await start_node(tmp_path, redis_server.url, name, GAP, public=True))
        a, b = nodes
        publication = await teach(a)
        await asyncio.sleep(2.5)  # both nodes' loads are in the directory
        for n in range(4):  # every one of them asks A
            classrooms.append(await join(a, f"school {n}"))
        await asyncio.gather(
            *(p.wait_frames(0, 60, TAG_CAMERA, timeout=PLAY_TIMEOUT) for p in classrooms)
        )
        assert min(fps(p) for p in classrooms) >= 25
        on_b = [p for p in classrooms if p.location.startswith(b.base)]
        print(f"\nof 4 classrooms asking A, {len(on_b)} were sent to B")
        assert 1 <= len(on_b) <= 3 and b.health()["classrooms"] == len(on_b)
        await publication.close()
    finally:
        await asyncio.gather(*(p.close() for p in classrooms))
        for node in nodes:
            node.stop()
