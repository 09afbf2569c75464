"""A WHEP player on werift, a WebRTC stack that shares no code with aiortc or Chromium.

tests/clients/werift-player.mjs (`npm ci --prefix tests/clients`) runs in Node with werift's
default configuration: bundle policy max-compat (one transport per m-line, BUNDLE offered),
host candidates only once its default Google STUN server fails to resolve offline. It plays an
aiortc teacher's lesson, counts the RTP it receives, DELETEs its session and prints one JSON
line. Each test checks the rates and that the relay holds no player once the process is gone.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RelayUnderTest, settled
from tests.media import CounterVideoTrack, ToneAudioTrack
from tests.peers import whip_publish

CLIENTS = Path(__file__).resolve().parents[1] / "clients"
PLAYER = CLIENTS / "werift-player.mjs"
WERIFT = CLIENTS / "node_modules" / "werift"
NODE = shutil.which("node")

ROOM = "werift"
SECONDS = 4.0  # measured from the first complete VP8 frame the player receives
# the player's own limits are 15 s to gather and 15 s to a first frame, 10 s per request
RUN_TIMEOUT = 45.0

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not on PATH: werift runs in Node 20"),
    pytest.mark.skipif(
        not WERIFT.exists(),
        reason="tests/clients/node_modules/werift is missing: run `npm ci --prefix tests/clients`",
    ),
    pytest.mark.timeout(60),
]


async def run_player(url: str, token: str, video_first: bool) -> dict[str, Any]:
    """Run the player to its end; fail with its output unless it exits 0 with a JSON line."""
    assert NODE is not None
    args = [str(PLAYER), url, token, str(SECONDS)] + (["video-first"] if video_first else [])
    process = await asyncio.create_subprocess_exec(
        NODE, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(RUN_TIMEOUT):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:  # timed out: leave no Node process behind
            process.kill()
            await process.wait()
    output = f"exit {process.returncode}\nstdout: {out.decode()!r}\nstderr: {err.decode()[-3000:]}"
    assert process.returncode == 0, output
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def players(relay: RelayUnderTest, room: str) -> int:
    """How many WHEP sessions the room holds; none once the room is gone."""
    runtime = relay.registry.find(room)
    return 0 if runtime is None else len(runtime.players)


@pytest.mark.parametrize("video_first", [False, True], ids=["audio-first", "video-first"])
async def test_werift_plays_a_lesson(relay: RelayUnderTest, video_first: bool) -> None:
    video = CounterVideoTrack(fps=30.0)
    teacher = relay.token(ROOM, "teacher")
    publication = await whip_publish(relay.base, ROOM, teacher, "camera", video, ToneAudioTrack())
    try:
        token = relay.token(ROOM, "classroom", "werift")
        result = await run_player(f"{relay.base}/whep/{ROOM}", token, video_first)
        seconds = result["seconds"]
        fps = result["video_frames"] / seconds
        audio_rate = result["audio_packets"] / seconds
        print(f"werift: {fps:.1f} fps, {audio_rate:.1f} audio packets/s, {result}")  # with -rP
        assert fps >= 25, result
        assert audio_rate >= 40, result  # Opus in 20 ms packets is 50 a second
        assert await settled(lambda: players(relay, ROOM) == 0), result
    finally:
        await publication.close()
