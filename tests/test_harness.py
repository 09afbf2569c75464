"""The media harness itself: counters survive drawing and a real VP8/Opus hop; logs measure."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass

import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from tests.media import (
    MAX_TAG,
    NUMBER_MODULUS,
    TAG_CAMERA,
    TAG_SCREEN,
    CounterVideoTrack,
    Luma,
    ToneAudioTrack,
    make_frame,
    read_counter,
)
from tests.peers import (
    FrameLog,
    MediaSink,
    Publication,
    local_answer,
    local_offer,
    new_peer_connection,
)

MAX_NUMBER = NUMBER_MODULUS - 1


@pytest.mark.parametrize(
    ("tag", "number"),
    [
        (0, 0),
        (TAG_CAMERA, 0),
        (TAG_SCREEN, 1),
        (MAX_TAG, MAX_NUMBER),
        (0, MAX_NUMBER),
        (MAX_TAG, 0),
        (3, 0xA5A5A5),
        (5, 0x5A5A5A),
        (TAG_CAMERA, 123_456),
    ],
)
@pytest.mark.parametrize(("width", "height"), [(320, 240), (160, 120), (640, 360)])
def test_counter_reads_back_from_raw_frame(tag: int, number: int, width: int, height: int) -> None:
    frame = make_frame(width, height, tag, number, sweep=width // 2)
    assert read_counter(frame) == (tag, number)


@pytest.mark.parametrize(("width", "height"), [(160, 120), (176, 144), (1280, 720)])
def test_counter_reads_back_from_rescaled_rendition(width: int, height: int) -> None:
    frame = make_frame(320, 240, TAG_SCREEN, 777_777).reformat(width=width, height=height)
    assert read_counter(frame) == (TAG_SCREEN, 777_777)


def test_number_past_24_bits_wraps() -> None:
    assert read_counter(make_frame(320, 240, TAG_CAMERA, NUMBER_MODULUS + 5)) == (TAG_CAMERA, 5)


def test_tag_over_three_bits_is_refused() -> None:
    with pytest.raises(ValueError, match="tag"):
        CounterVideoTrack(tag=MAX_TAG + 1)


def _plain(luma: Luma) -> av.VideoFrame:
    """A yuv420p frame with the given luma and neutral chroma."""
    height, width = luma.shape
    chroma = np.full((height // 2, width), 128, dtype=np.uint8)
    return av.VideoFrame.from_ndarray(np.vstack([luma, chroma]), format="yuv420p")


@pytest.mark.parametrize("level", [128, 16, 235])
def test_flat_frame_is_unreadable(level: int) -> None:
    assert read_counter(_plain(np.full((240, 320), level, dtype=np.uint8))) is None


def test_noise_frame_is_unreadable() -> None:
    rng = np.random.default_rng(7)
    misreads = sum(
        read_counter(_plain(rng.integers(0, 256, (240, 320), dtype=np.uint8))) is not None
        for _ in range(50)
    )
    assert misreads == 0


def test_single_flipped_cell_is_rejected_by_parity() -> None:
    frame = make_frame(320, 240, TAG_CAMERA, 1000)
    planes = frame.to_ndarray(format="yuv420p")
    planes[0:40, 280:320] = 251 - planes[0:40, 280:320]  # cell 7: the number's top bit
    assert read_counter(av.VideoFrame.from_ndarray(planes, format="yuv420p")) is None


async def test_counter_track_numbers_and_pts_continue_from_start() -> None:
    track = CounterVideoTrack(tag=TAG_SCREEN, start=500, fps=50)
    frames = [await track.recv() for _ in range(3)]
    track.stop()
    assert [read_counter(f) for f in frames] == [(TAG_SCREEN, n) for n in (500, 501, 502)]
    assert [f.pts for f in frames] == [0, 1800, 3600]
    assert track.next_number == 503


async def test_tone_track_yields_20ms_frames_at_48k() -> None:
    track = ToneAudioTrack()
    frames = [await track.recv() for _ in range(2)]
    track.stop()
    assert [(f.sample_rate, f.samples, f.pts) for f in frames] == [
        (48_000, 960, 0),
        (48_000, 960, 960),
    ]
    assert np.abs(frames[1].to_ndarray()).max() > 5000


def _log(entries: list[tuple[float, int, int]]) -> FrameLog:
    """A FrameLog fed raw frames at literal times."""
    log = FrameLog()
    for now, tag, number in entries:
        log.add(now, make_frame(160, 120, tag, number))
    return log


def test_log_measures_fps_and_gap_in_window() -> None:
    log = _log([(t / 10, 1, i) for i, t in enumerate([0, 1, 2, 3, 10, 11, 12])])
    assert log.fps(now=1.25, window=1.0) == pytest.approx(4.0)
    assert log.max_gap(since=0.0, until=0.35) == pytest.approx(0.1)
    assert log.max_gap() == pytest.approx(0.7)
    assert math.isinf(log.max_gap(since=5.0))


@pytest.mark.parametrize(
    ("entries", "increasing"),
    [
        ([(0, 1, 5), (1, 1, 6), (2, 1, 9)], True),
        ([(0, 1, 5), (1, 1, 5)], False),
        ([(0, 1, 5), (1, 2, 0), (2, 2, 1), (3, 1, 6)], True),
        ([(0, 1, 5), (1, 1, 4)], False),
    ],
)
def test_log_checks_numbers_increase_within_each_source_run(
    entries: list[tuple[float, int, int]], increasing: bool
) -> None:
    assert _log(entries).increasing() is increasing


def test_log_counts_unreadable_frames_apart() -> None:
    log = FrameLog()
    log.add(0.0, _plain(np.full((120, 160), 128, dtype=np.uint8)))
    assert (log.unreadable, log.records) == (1, [])


async def test_wait_frames_times_out_with_what_it_waited_for() -> None:
    with pytest.raises(TimeoutError, match="3 frames with tag 2"):
        await FrameLog().wait_frames(3, tag=TAG_SCREEN, timeout=0.05)


@dataclass
class Link:
    """A publisher and a receiver joined directly on loopback, no relay between."""

    sender: RTCPeerConnection
    receiver: RTCPeerConnection
    sink: MediaSink


@pytest.fixture
async def link() -> AsyncIterator[Link]:
    """Publisher (counter video + tone) offers straight to a receiver that logs what it decodes."""
    sender, receiver = new_peer_connection(), new_peer_connection()
    sink = MediaSink()
    try:
        sender.addTransceiver(ToneAudioTrack(), direction="sendonly")
        sender.addTransceiver(CounterVideoTrack(tag=TAG_SCREEN, start=1000), direction="sendonly")
        await receiver.setRemoteDescription(
            RTCSessionDescription(await local_offer(sender), "offer")
        )
        sink.attach(receiver)
        await sender.setRemoteDescription(
            RTCSessionDescription(await local_answer(receiver), "answer")
        )
        yield Link(sender, receiver, sink)
    finally:
        await sender.close()
        await receiver.close()
        await sink.stop()


async def test_real_peers_carry_counter_at_full_rate(link: Link) -> None:
    video = link.sink.video[0]
    records = await video.wait_frames(90, tag=TAG_SCREEN, timeout=15)
    fps = (len(records) - 1) / (records[-1].t - records[0].t)
    assert fps >= 25, f"{fps:.1f} fps"
    assert video.increasing()
    assert records[0].number >= 1000
    assert video.max_gap(since=records[0].t) < 0.5
    assert (records[-1].width, records[-1].height) == (320, 240)


async def test_real_peers_carry_audio(link: Link) -> None:
    await link.sink.audio.wait_frames(100, timeout=15)
    assert link.sink.audio.max_gap(since=link.sink.audio.times[-100]) < 0.5


TOKEN = "any-token"


async def test_close_tolerates_a_vanished_server() -> None:
    pc = new_peer_connection()
    gone = Publication(pc, "http://127.0.0.1:9/whip/r1/x", TOKEN)
    assert await gone.close() is None
