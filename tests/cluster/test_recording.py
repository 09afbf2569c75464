"""A cluster records a lesson once, at its origin: edges keep only their classrooms' quality."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.cluster.nodes import Node, start_node
from tests.cluster.test_cascade import PLAY_TIMEOUT, join, teach
from tests.media import TAG_CAMERA
from tests.redis_server import RedisServer

RECORDING = {"KETANG_RECORD": "true", "KETANG_RECONNECT_GRACE": "1"}


def lessons(node: Node, tmp_path: Path) -> list[Path]:
    """The lessons published in the node's library."""
    return sorted((tmp_path / node.name / "library").glob("*/meta.json"))


@pytest.mark.timeout(90)
async def test_the_origin_records_the_lesson_and_the_edge_does_not(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    nodes = [await start_node(tmp_path, redis_server.url, n, RECORDING) for n in ("a", "b")]
    a, b = nodes
    try:
        publication = await teach(a)
        classroom = await join(b, "Hill School")
        await classroom.wait_frames(0, 60, TAG_CAMERA, timeout=PLAY_TIMEOUT)
        await publication.close()
        for _ in range(100):  # the origin publishes it once its reconnect grace is over
            if lessons(a, tmp_path):
                break
            await asyncio.sleep(0.1)
        await classroom.close()
        await asyncio.sleep(1.5)  # the edge's lesson ended too: it would have published by now
        assert len(lessons(a, tmp_path)) == 1
        assert lessons(b, tmp_path) == []
    finally:
        for node in nodes:
            node.stop()
