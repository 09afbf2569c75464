"""Classrooms play on either send path, and across a switch from one to the other mid-lesson
(relay/rtc/rtpsend.py): both protect with each classroom's one SRTP context, so a classroom
never sees a packet its SRTP state rejects."""

from __future__ import annotations

import asyncio

import pytest

from relay.rtc import rtpsend
from relay.rtc.sender import SendPass
from tests.conftest import RelayUnderTest
from tests.media import TAG_CAMERA, CounterVideoTrack, ToneAudioTrack
from tests.peers import Playback, whep_play, whip_publish

ROOM = "send-paths"


async def plays(classroom: Playback) -> None:
    """30 new camera frames, in order, and 40 new Opus frames."""
    frames, _ = await asyncio.gather(
        classroom.wait_frames(0, 30, TAG_CAMERA), classroom.audio.wait_frames(40)
    )
    numbers = [frame.number for frame in frames]
    assert numbers == sorted(numbers)


@pytest.mark.timeout(60)
@pytest.mark.skipif(rtpsend.NATIVE is None, reason="the native path is not built")
async def test_classrooms_play_on_both_paths_and_across_a_switch(
    relay: RelayUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    native = rtpsend.NATIVE
    teacher = relay.token(ROOM, "teacher")
    publication = await whip_publish(
        relay.base, ROOM, teacher, "camera", CounterVideoTrack(tag=TAG_CAMERA), ToneAudioTrack()
    )
    token = relay.token(ROOM, "classroom")
    sent = SendPass.of(asyncio.get_running_loop()).sent
    on_native = await whep_play(relay.base, ROOM, token)
    await plays(on_native)  # connected: its streams were made native
    monkeypatch.setattr(rtpsend, "NATIVE", None)
    in_python = await whep_play(relay.base, ROOM, token)  # its streams are Python twins
    classrooms = [on_native, in_python]
    try:
        # the native streams now go out in Python too, numbered on by the same stream
        before = dict(sent)
        await asyncio.gather(*(plays(c) for c in classrooms))
        assert sent["python"] - before["python"] >= 2 * (30 + 40)
        assert sent["native"] == before["native"]
        # and back on the native path, in the same SRTP contexts; the twins stay in Python
        monkeypatch.setattr(rtpsend, "NATIVE", native)
        before = dict(sent)
        await asyncio.gather(*(plays(c) for c in classrooms))
        assert sent["python"] - before["python"] >= 30 + 40
        assert sent["native"] - before["native"] >= 30 + 40
        for classroom in classrooms:
            assert classroom.video[0].unreadable == 0
    finally:
        await asyncio.gather(*(c.close() for c in classrooms))
        await publication.close()
