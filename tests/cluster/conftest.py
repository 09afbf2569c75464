"""Fixtures of the cluster tests: a private redis-server per test, and directories on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from relay.cluster.directory import Directory, connect
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
