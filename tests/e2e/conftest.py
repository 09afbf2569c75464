"""Real Chromium for browser tests: Debian's /usr/bin/chromium driven by Playwright."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright

from relay.app import build_app
from relay.config import load_config
from tests import netns
from tests.conftest import RelayUnderTest, free_port

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    # a 30 fps fake camera, as a real webcam: the fake device's default of 20 fps left a
    # test that counts 20 decoded frames a second on the edge
    "--use-fake-device-for-media-stream=fps=30",
    "--use-fake-ui-for-media-stream",
]

needs_chromium = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None,
    reason="Debian chromium is not installed (make test installs it)",
)


@contextlib.asynccontextmanager
async def chromium(flags: list[str] = FLAGS) -> AsyncIterator[Browser]:
    """One headless Debian Chromium with these flags; never a downloaded one."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=flags)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """One headless Chromium with fake camera, microphone and screen."""
    async with chromium() as launched:
        yield launched


async def until_true(page: Page, expression: str, timeout: float = 30.0) -> None:
    """Poll a JS expression until it is truthy. Playwright's wait_for_function compiles its
    predicate with eval inside the page, which the pages' content security policy forbids
    (as it should); an evaluate from outside is not subject to it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await page.evaluate(expression):
        if loop.time() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {expression}")
        await asyncio.sleep(0.1)


@pytest.fixture
async def nat() -> AsyncIterator[netns.CloudNat]:
    """A school behind its NAT and a relay VM behind 1:1 NAT (tests/netns.py)."""
    reason = netns.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with netns.cloud_nat() as made:
        yield made
    assert netns.leftovers() == []


@pytest.fixture
async def link() -> AsyncIterator[netns.Link]:
    reason = netns.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with netns.link() as made:
        yield made
    assert netns.leftovers() == []


@pytest.fixture
async def relay_on_link(tmp_path: Path, link: netns.Link) -> AsyncIterator[RelayUnderTest]:
    """A relay reachable on loopback and from the classroom's namespace."""
    port = free_port()
    config = load_config(None, {}, {"port": port, "data_dir": str(tmp_path / "data")})
    secret = b"test-secret-" + b"x" * 32
    app = build_app(config, secret)
    runner = web.AppRunner(app)
    await runner.setup()
    for host in ("127.0.0.1", link.host_ip):
        await web.TCPSite(runner, host, port).start()
    try:
        yield RelayUnderTest(f"http://127.0.0.1:{port}", secret, config, app)
    finally:
        await runner.cleanup()
