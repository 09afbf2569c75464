"""A full or unwritable data directory never stops teaching: the lesson goes live, the teacher
and the admin see the recording failing, it is counted once, and nothing is left behind."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from monitoring.metrics import REGISTRY
from tests.conftest import RelayUnderTest, settled
from tests.media import TAG_CAMERA, CounterVideoTrack, ToneAudioTrack
from tests.peers import whep_play, whip_publish

ROOM = "disk"
GRACE = 1.0


def recorder_errors() -> float:
    return REGISTRY.get_sample_value("ketang_recorder_errors_total") or 0.0


@pytest.fixture(params=["unwritable", "full"])
def relay_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The relay's recordings directory is a file (nothing can be created there), or a
    tmpfs of 64 KiB that a second of lesson fills."""
    recordings = tmp_path / "data" / "recordings"
    recordings.parent.mkdir(parents=True)
    if request.param == "unwritable":
        recordings.write_text("not a directory")
    else:
        recordings.mkdir()
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(recordings)],
            capture_output=True,
        )
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    yield {"KETANG_RECONNECT_GRACE": str(GRACE)}
    if request.param == "full":
        subprocess.run(["umount", "-l", str(recordings)], check=False)


async def watch(relay: RelayUnderTest, token: str, seconds: float) -> list[dict[str, Any]]:
    """The states a teacher's page gets within `seconds`."""
    url = f"{relay.base}/api/rooms/{ROOM}/events?token={token}"
    states: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                message = json.loads(await ws.receive_str(timeout=left))
            except TimeoutError:
                break
            if message["type"] == "state":
                states.append(message)
    return states


@pytest.mark.timeout(60)
async def test_teaching_goes_on_and_the_failure_is_shown_and_counted_once(
    relay: RelayUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    errors = recorder_errors()
    teacher_token = relay.token(ROOM, "teacher", "Ms Wang")
    teacher = await whip_publish(
        relay.base, ROOM, teacher_token, "camera", CounterVideoTrack(tag=TAG_CAMERA),
        ToneAudioTrack(),
    )  # fmt: skip
    classroom = await whep_play(relay.base, ROOM, relay.token(ROOM, "classroom", "East"))
    try:
        await classroom.wait_frames(0, 60, TAG_CAMERA)  # the lesson is live
        states = await watch(relay, teacher_token, 3.0)
        failing = [s["recording"] for s in states if s["recording"]["state"] == "failing"]
        assert failing and failing[-1]["problem"]
        admin = relay.token("*", "admin", "bureau")
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{relay.base}/api/rooms", headers={"Authorization": f"Bearer {admin}"}) as r,
        ):
            (room,) = (await r.json())["rooms"]
        assert room["recording"]["state"] == "failing"
        await classroom.wait_frames(0, 60, TAG_CAMERA)  # and it stays live
    finally:
        await classroom.close()
        await teacher.close()
    assert recorder_errors() == errors + 1
    # no ghost publisher: the teacher can publish again at once
    again = await whip_publish(relay.base, ROOM, teacher_token, "camera", CounterVideoTrack(), None)
    await again.close()
    assert await settled(lambda: relay.registry.find(ROOM) is None, timeout=GRACE + 10)
    assert await settled(lambda: not relay.recorder.publishing, timeout=20)
    tracebacks = [r for r in caplog.records if r.exc_info and r.name.startswith("recorder")]
    assert tracebacks == []
    library = relay.config.storage.data_dir / "library"
    assert [p for p in library.iterdir() if p.name.endswith(".partial")] == []
    # what the full disk took is in the library; an unwritable one recorded nothing
    lessons = list(relay.catalog.lessons.values())
    if relay_env_kind(relay) == "full":
        (lesson,) = lessons
        assert lesson["duration"] > 0
    else:
        assert lessons == []


def relay_env_kind(relay: RelayUnderTest) -> str:
    recordings = relay.config.storage.data_dir / "recordings"
    return "full" if recordings.is_dir() else "unwritable"
