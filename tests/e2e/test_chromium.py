"""Real Chromium plays a lesson over WHEP: our RTP, SRTP and CORS as a browser sees them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser

from tests.conftest import RelayUnderTest
from tests.e2e.conftest import needs_chromium
from tests.media import CounterVideoTrack, ToneAudioTrack
from tests.peers import whep_play, whip_publish

CLIENTS = (Path(__file__).parent / "whip_whep.js").read_text()
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

pytestmark = needs_chromium


@pytest.mark.timeout(90)
async def test_chromium_plays_the_lesson_without_loss(
    relay: RelayUnderTest, browser: Browser
) -> None:
    teacher = await whip_publish(
        relay.base,
        "chrome",
        relay.token("chrome", "teacher"),
        "camera",
        CounterVideoTrack(width=640, height=360),
        ToneAudioTrack(),
    )
    try:
        page = await browser.new_page()
        await page.set_content("<body></body>")  # an opaque origin: the POST crosses origins
        await page.add_script_tag(content=CLIENTS)
        url, token = f"{relay.base}/whep/chrome", relay.token("chrome", "classroom")
        reply = await page.evaluate("([u, t]) => play(u, t)", [url, token])
        assert reply["status"] == 201, reply
        first = await wait_for_video(page)
        await asyncio.sleep(3.0)
        last: dict[str, Any] = await page.evaluate("inbound()")
        fps = (last["video"]["framesDecoded"] - first["video"]["framesDecoded"]) / 3.0
        assert fps >= 25
        assert last["video"]["frameWidth"] == 640
        assert last["video"]["packetsLost"] == 0
        assert last["audio"]["totalSamplesReceived"] > first["audio"]["totalSamplesReceived"]
        assert last["audio"]["concealedSamples"] < 0.05 * last["audio"]["totalSamplesReceived"]
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "chromium-whep-player.png"))
    finally:
        await teacher.close()


async def wait_for_video(page: Any, timeout: float = 10.0) -> dict[str, Any]:
    """Inbound stats once Chromium has decoded its first frames."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        stats: dict[str, Any] = await page.evaluate("inbound()")
        if stats.get("video", {}).get("framesDecoded", 0) > 0 and "audio" in stats:
            return stats
        assert loop.time() < deadline, f"no video decoded in {timeout}s: {stats}"
        await asyncio.sleep(0.1)


@pytest.mark.timeout(90)
async def test_a_chromium_teacher_reaches_classrooms(
    relay: RelayUnderTest, browser: Browser
) -> None:
    page = await browser.new_page()
    # getUserMedia needs a secure context: http://127.0.0.1 is one, about:blank is not
    await page.goto(f"{relay.base}/healthz")
    await page.add_script_tag(content=CLIENTS)
    url, token = f"{relay.base}/whip/browser?source=camera", relay.token("browser", "teacher")
    reply = await page.evaluate("([u, t]) => publish(u, t)", [url, token])
    assert reply["status"] == 201, reply
    classroom = await whep_play(relay.base, "browser", relay.token("browser", "classroom"))
    try:
        # Chromium's fake camera carries no frame counter: count every decoded frame
        log = classroom.video[0]
        await wait_until(lambda: log.unreadable >= 20, timeout=15)
        start = log.unreadable
        await asyncio.sleep(2.0)
        assert (log.unreadable - start) / 2.0 >= 20
        await classroom.audio.wait_frames(50)
    finally:
        await classroom.close()
        await page.close()


async def wait_until(condition: Any, timeout: float) -> None:
    """Poll `condition()` until it holds, failing after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.1)
