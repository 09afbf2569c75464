"""Fixtures of the cluster tests: a private redis-server per test, and directories on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from relay.cluster.directory import Directory, connect
from tests.cluster.nodes import Node, start_node
from tests.redis_server import RedisServer, redis_server_path


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, stopped afterwards; skipped where none is installed."""
    if redis_server_path() is None:
        pytest.skip("redis-server is not on PATH (make test installs the Debian package)")
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def directory(redis_server: RedisServer) -> AsyncIterator[Directory]:
    """A directory on the test's Redis, with its client as `connect` builds it."""
    directory = Directory(connect(redis_server.url))
    try:
        yield directory
    finally:
        await directory.aclose()


@pytest.fixture
async def nodes(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[list[Node]]:
    """Three nodes, A, B and C, of one cluster, each a real `ketang serve` process."""
    started: list[Node] = []
    try:
        for name in ("a", "b", "c"):
            started.append(await start_node(tmp_path, redis_server.url, name))
        yield started
    finally:
        for node in started:
            node.stop()
