"""The benchmark's Janus driver against a real Janus and real aiortc peers on loopback."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection

from relay.bench.janus import (
    JanusPublisher,
    JanusServer,
    JanusSubscriber,
    create_room,
    ensure_janus,
)
from tests.conftest import free_port
from tests.media import TAG_CAMERA, CounterVideoTrack, ToneAudioTrack
from tests.peers import MediaSink

try:
    ensure_janus()
except RuntimeError as error:
    pytest.skip(f"needs Janus Gateway: {error}", allow_module_level=True)

ROOM = 1234
CAP = 4_000_000


def _peer() -> RTCPeerConnection:
    """As the bench builds them: no STUN, one bundled transport."""
    return RTCPeerConnection(
        RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    )


def _let_decode(pc: RTCPeerConnection) -> None:
    """No frame taps: the sink decodes whatever arrives."""


@pytest.fixture
async def janus(tmp_path: Path) -> AsyncIterator[JanusServer]:
    """A private Janus with one room; stopped after the test."""
    server = JanusServer(tmp_path, free_port())
    await server.start()
    try:
        await create_room(server.url, ROOM, CAP)
        yield server
    finally:
        await server.stop()


async def _subscribe(url: str, feed: int) -> tuple[JanusSubscriber, RTCPeerConnection, MediaSink]:
    """One classroom on `feed`, its tracks drained into a sink."""
    pc, subscriber, sink = _peer(), JanusSubscriber(), MediaSink()
    try:
        await subscriber.start(url, ROOM, feed, pc, _let_decode)
    except BaseException:
        await pc.close()
        raise
    sink.attach(pc)
    return subscriber, pc, sink


@pytest.mark.timeout(90)
async def test_two_subscribers_get_full_rate_video_and_audio_through_janus(
    janus: JanusServer,
) -> None:
    publisher_pc = _peer()
    publisher_pc.addTransceiver(ToneAudioTrack(), direction="sendonly")
    publisher_pc.addTransceiver(CounterVideoTrack(), direction="sendonly")
    publisher = JanusPublisher()
    classrooms: list[tuple[JanusSubscriber, RTCPeerConnection, MediaSink]] = []
    try:
        feed = await publisher.start(janus.url, ROOM, publisher_pc)
        for _ in range(2):
            classrooms.append(await _subscribe(janus.url, feed))
        for _, _, sink in classrooms:
            await sink.video[0].wait_frames(60, tag=TAG_CAMERA, timeout=20.0)
            await sink.audio.wait_frames(50)
        now = asyncio.get_running_loop().time()
        for _, _, sink in classrooms:
            assert sink.video[0].fps(now, 2.0) >= 25
            assert sink.video[0].increasing()
    finally:
        for subscriber, pc, sink in classrooms:
            await subscriber.close()
            await pc.close()
            await sink.stop()
        await publisher.close()
        await publisher_pc.close()
    pid = janus.pid
    await janus.stop()
    assert not os.path.exists(f"/proc/{pid}")
