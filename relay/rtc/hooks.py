"""Every hook Ketang has into aiortc's private state, in one place, pinned to aiortc 1.16.

aiortc decodes everything it receives and ignores keyframe requests for pre-encoded media. A
forwarding relay needs three things aiortc has no public API for:

1. complete, depayloaded frames taken *before* the decoder (`tap_frames`): we replace `put` on
   the receiver's decoder queue; the jitter buffer, NACK, RR and REMB keep working;
2. keyframe requests (PLI/FIR) a classroom sends to one of our senders (`on_keyframe_request`):
   aiortc's sender just sets a flag its encoder would read, so we take the call instead;
3. a PLI sent upstream on demand (`request_keyframe`).

`check_aiortc()` runs at start-up and in tests/rtc/test_hooks.py: if aiortc changes under these
hooks, it fails loudly instead of letting media silently stop.
"""

from __future__ import annotations

import asyncio
import logging
import queue
from collections.abc import Callable
from typing import Any

import aiortc
from aiortc.rtcrtpreceiver import RTCRtpReceiver
from aiortc.rtcrtpsender import RTCRtpSender

logger = logging.getLogger(__name__)

SUPPORTED_AIORTC = ("1.16.",)

# name-mangled private attributes we rely on (aiortc 1.16.0, rtcrtpreceiver.py)
_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"
_RTX_SSRC = "_RTCRtpReceiver__rtx_ssrc"

FrameSink = Callable[[Any, Any], None]
"""Receives (RTCRtpCodecParameters, JitterFrame) for every complete frame, on the event loop."""


class AiortcChanged(RuntimeError):
    """aiortc no longer has the private state these hooks need."""


def check_aiortc() -> None:
    """Fail loudly if the installed aiortc is not the version these hooks were verified on."""
    if not aiortc.__version__.startswith(SUPPORTED_AIORTC):
        raise AiortcChanged(
            f"relay/rtc/hooks.py is verified on aiortc {SUPPORTED_AIORTC}, "
            f"found {aiortc.__version__}"
        )
    probe = RTCRtpReceiver.__init__.__code__.co_names
    for name in ("_RTCRtpReceiver__decoder_queue", "_RTCRtpReceiver__rtx_ssrc"):
        if name not in probe:
            raise AiortcChanged(f"aiortc RTCRtpReceiver lost {name}")
    for method in ("_send_rtcp_pli", "getSynchronizationSources"):
        if not hasattr(RTCRtpReceiver, method):
            raise AiortcChanged(f"aiortc RTCRtpReceiver lost {method}")
    if "_send_keyframe" not in RTCRtpSender._handle_rtcp_packet.__code__.co_names:
        raise AiortcChanged("aiortc RTCRtpSender no longer routes PLI/FIR to _send_keyframe")


class _TapQueue:
    """Stands in for the decoder queue's `put`: frames go to the sink, never to the decoder."""

    __slots__ = ("_put", "_sink")

    def __init__(self, original: queue.Queue[Any], sink: FrameSink) -> None:
        self._put = original.put
        self._sink = sink

    def __call__(self, item: Any, *args: Any, **kwargs: Any) -> None:
        if item is None:  # shutdown sentinel: let the idle decoder thread exit
            self._put(item, *args, **kwargs)
            return
        codec, frame = item
        self._sink(codec, frame)


def tap_frames(receiver: RTCRtpReceiver, sink: FrameSink) -> None:
    """Route the receiver's complete encoded frames to `sink` instead of its decoder thread."""
    decoder_queue: queue.Queue[Any] = getattr(receiver, _DECODER_QUEUE)
    setattr(decoder_queue, "put", _TapQueue(decoder_queue, sink))  # noqa: B010 (instance override)


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call `callback` when the remote end of `sender` sends PLI or FIR."""
    setattr(sender, "_send_keyframe", callback)  # noqa: B010 (instance override)


def media_ssrc(receiver: RTCRtpReceiver) -> int | None:
    """The SSRC of the media (not RTX) stream the receiver currently gets."""
    rtx: dict[int, int] = getattr(receiver, _RTX_SSRC)
    for source in receiver.getSynchronizationSources():
        if source.source not in rtx:
            return int(source.source)
    return None


def request_keyframe(receiver: RTCRtpReceiver) -> asyncio.Task[None] | None:
    """Send a PLI upstream for the receiver's media stream; None if no stream is known yet."""
    ssrc = media_ssrc(receiver)
    if ssrc is None:
        return None
    return asyncio.ensure_future(receiver._send_rtcp_pli(ssrc))
