"""Shared fixtures: a real relay on a free loopback port, and tokens for it."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from recorder.library import Catalog
from recorder.recorder import Recorder
from relay import tokens
from relay.app import RELAY, build_app, make_runner
from relay.config import Config, load_config
from relay.registry import Registry


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def open_fds() -> int:
    """File descriptors this process holds: sockets of leaked peers show up here."""
    return len(os.listdir("/proc/self/fd"))


async def settled(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll `check` until it holds: connections finish closing a few loop turns later."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


@dataclass
class RelayUnderTest:
    """A relay running in this event loop, with what tests need to talk to it."""

    base: str
    secret: bytes
    config: Config
    app: web.Application

    def token(self, room: str, role: str, name: str = "", ttl: int = 3600) -> str:
        return tokens.issue(self.secret, room, role, name or role, ttl)

    @property
    def registry(self) -> Registry:
        return self.app[RELAY].registry

    @property
    def catalog(self) -> Catalog:
        return self.app[RELAY].catalog

    @property
    def recorder(self) -> Recorder:
        return self.app[RELAY].recorder


@pytest.fixture
def relay_env() -> dict[str, str]:
    """KETANG_* settings for the `relay` fixture; a test module overrides this to change them."""
    return {}


@pytest.fixture
async def relay(tmp_path: Path, relay_env: dict[str, str]) -> AsyncIterator[RelayUnderTest]:
    """A relay with defaults, data under tmp_path, on a free port; shut down after the test."""
    port = free_port()
    flags = {"port": port, "data_dir": str(tmp_path / "data"), "udp_port": 0}
    config = load_config(None, relay_env, flags)
    secret = b"test-secret-" + b"x" * 32
    app = build_app(config, secret)
    runner = make_runner(app, config)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield RelayUnderTest(f"http://127.0.0.1:{port}", secret, config, app)
    finally:
        await runner.cleanup()
