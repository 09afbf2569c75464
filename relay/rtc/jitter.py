"""A jitter buffer that hands a frame over as soon as its last packet is in.

aiortc's JitterBuffer releases a video frame only when the first packet of the *next* frame
arrives, and holds four Opus packets before releasing audio: one frame interval (33 ms) of video
and 80 ms of audio added on the relay's ingest, for no benefit to a forwarder. For video this
subclass keeps aiortc's ring, reordering and overflow handling, and adds one rule: when the
packets from the buffer's origin end with the marker bit (RFC 7741 §4.1), the frame is complete
and is released at once. Audio is not buffered at all: every Opus packet is a frame, and the
classroom's own jitter buffer puts packets back in order.
"""

from __future__ import annotations

from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket

from relay.core.codecs import is_vp8_keyframe


class EagerJitterBuffer(JitterBuffer):
    """aiortc's jitter buffer, minus the wait for the next frame's first packet."""

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        if not self._is_video:
            return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)  # type: ignore[attr-defined]
        pli_flag, frame = super().add(packet)
        if frame is None and self._origin is not None:
            frame = self._complete_frame()
            if frame is None and packet.marker:
                frame = self._skip_to_keyframe()
        return pli_flag, frame

    def _skip_to_keyframe(self) -> JitterFrame | None:
        """A later keyframe is complete while an earlier frame still misses packets: nothing
        before a keyframe is needed to decode it, so drop the stuck frames and release it. The
        missing packet is what made aiortc's buffer stall for seconds (its ring of 512)."""
        assert self._origin is not None
        previous = None
        for count in range(1, self._capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            starts = packet is not None and (previous is None or packet.timestamp != previous)
            if starts and is_vp8_keyframe(packet._data):  # type: ignore[union-attr]
                if not self._complete_at(count):
                    return None  # not all in yet: keep waiting as before
                self.remove(count)
                return self._complete_frame()
            previous = packet.timestamp if packet is not None else None
        return None

    def _complete_at(self, offset: int) -> bool:
        """True when the frame starting `offset` packets after the origin has all its packets."""
        assert self._origin is not None
        timestamp = None
        for count in range(offset, self._capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is None or (timestamp is not None and packet.timestamp != timestamp):
                return False
            timestamp = packet.timestamp
            if packet.marker:
                return True
        return False

    def _complete_frame(self) -> JitterFrame | None:
        """The frame starting at the origin if all its packets are in; removes them."""
        assert self._origin is not None
        pieces: list[bytes] = []
        timestamp: int | None = None
        for count in range(self._capacity):
            packet = self._packets[(self._origin + count) % self._capacity]
            if packet is None or (timestamp is not None and packet.timestamp != timestamp):
                return None
            timestamp = packet.timestamp
            pieces.append(packet._data)  # type: ignore[attr-defined]
            if packet.marker:
                self.remove(count + 1)
                return JitterFrame(data=b"".join(pieces), timestamp=timestamp)
        return None
