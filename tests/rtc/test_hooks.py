"""The aiortc hooks must fail loudly, not silently, when aiortc changes under them."""

from __future__ import annotations

import queue
from typing import Any

import aiortc
import pytest
from aiortc import RTCPeerConnection
from aiortc.codecs.vpx import VpxPayloadDescriptor

from relay.core.codecs import vp8_descriptor
from relay.rtc import hooks


def test_installed_aiortc_has_every_hooked_attribute() -> None:
    hooks.check_aiortc()


def test_other_aiortc_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiortc, "__version__", "1.17.0")
    with pytest.raises(hooks.AiortcChanged, match=r"1\.17\.0"):
        hooks.check_aiortc()


async def test_tap_takes_frames_and_passes_shutdown_sentinel() -> None:
    pc = RTCPeerConnection()
    receiver = pc.addTransceiver("video", direction="recvonly").receiver
    seen: list[Any] = []
    hooks.tap_frames(receiver, lambda codec, frame: seen.append((codec, frame)))
    decoder_queue: queue.Queue[Any] = getattr(receiver, hooks._DECODER_QUEUE)
    decoder_queue.put(("codec", "frame"))
    decoder_queue.put(None)
    assert seen == [("codec", "frame")]
    assert decoder_queue.get_nowait() is None  # only the sentinel reached the decoder thread
    await pc.close()


async def test_keyframe_request_hook_replaces_the_sender_flag() -> None:
    pc = RTCPeerConnection()
    sender = pc.addTransceiver("video", direction="sendonly").sender
    calls: list[int] = []
    hooks.on_keyframe_request(sender, lambda: calls.append(1))
    sender._send_keyframe()
    assert calls == [1]
    await pc.close()


@pytest.mark.parametrize(
    ("first", "picture_id", "expected"),
    [
        (True, 0, b"\x90\x80\x80\x00"),
        (False, 0x1234, b"\x80\x80\x92\x34"),
        (True, 0x7FFF, b"\x90\x80\xff\xff"),
    ],
)
def test_vp8_descriptor_matches_aiortc(first: bool, picture_id: int, expected: bytes) -> None:
    reference = VpxPayloadDescriptor(
        partition_start=int(first), partition_id=0, picture_id=picture_id
    )
    assert vp8_descriptor(first, picture_id) == expected == bytes(reference)


async def test_connections_share_the_process_certificate_and_its_openssl_context() -> None:
    first, second = RTCPeerConnection(), RTCPeerConnection()
    for pc in (first, second):
        hooks.use_process_certificate(pc)
        pc.addTransceiver("video", direction="sendonly")
    offers = [await pc.createOffer() for pc in (first, second)]
    fingerprints = [
        line
        for offer in offers
        for line in offer.sdp.splitlines()
        if "a=fingerprint:sha-256" in line
    ]
    assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1]
    certificate = getattr(first, hooks._CERTIFICATES)[0]
    profiles = aiortc.rtcdtlstransport.SRTP_PROFILES
    assert certificate._create_ssl_context(profiles) is certificate._create_ssl_context(profiles)
    await first.close()
    await second.close()


def test_a_deferred_estimator_reports_as_aiortcs_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiortc.rtcrtpreceiver, "RemoteBitrateEstimator", hooks._REMOTE_ESTIMATOR)
    hooks.defer_bitrate_estimators()
    deferred: Any = getattr(aiortc.rtcrtpreceiver, "RemoteBitrateEstimator")()  # noqa: B009
    assert deferred._real is None  # a send-only transceiver's receiver never pays for one
    real = hooks._REMOTE_ESTIMATOR()
    for n in range(400):  # 20 packets a frame of 1200 bytes, 30 frames a second, 262144 = 1 s
        packet = {
            "abs_send_time": (n // 20) * 262144 // 30 & 0xFFFFFF,
            "arrival_time_ms": 1000 + (n // 20) * 33 + n % 20,
            "payload_size": 1200,
            "ssrc": 1234,
        }
        assert deferred.add(**packet) == real.add(**packet)
