"""A jitter buffer that hands a frame over as soon as its last packet is in.

aiortc's JitterBuffer releases a video frame only when the first packet of the *next* frame
arrives, and holds four Opus packets before releasing audio: one frame interval (33 ms) of video
and 80 ms of audio added on the relay's ingest, for no benefit to a forwarder. For video this
subclass keeps aiortc's ring, reordering and overflow handling, and adds one rule: when the
packets from the buffer's origin end with the marker bit (RFC 7741 §4.1), the frame is complete
and is released at once. Audio is not buffered at all: every Opus packet is a frame, and the
classroom's own jitter buffer puts packets back in order.

A lost packet from the teacher blocks every frame after it, for every classroom. aiortc's
receiver NACKs a gap once, when it first sees it; if the retransmission is lost too, it waits
until its ring of 512 packets overflows (seconds). So while the buffer is blocked it asks
again every RENACK_INTERVAL, and after STUCK_PLI it asks the teacher for a keyframe, which
`_skip_to_keyframe` releases past the hole.
"""

from __future__ import annotations

from collections.abc import Callable

from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add

from relay.core.codecs import is_vp8_keyframe
from relay.rtc.hooks import JitterRing, rtp_payload

# Seconds between repeated NACKs for packets still missing; about one teacher RTT.
RENACK_INTERVAL = 0.1
# Seconds blocked after which a keyframe is cheaper than waiting: two or three retransmission
# rounds have failed, and a PLI plus the keyframe take about one RTT more.
STUCK_PLI = 0.3
# Seconds before asking again for a keyframe that did not come (the PLI or the keyframe lost).
PLI_REPEAT = 1.0
# At most this many sequence numbers in one repeated NACK (the oldest, which block first).
MAX_NACKED = 64

MissingSink = Callable[[int, list[int]], None]  # (media ssrc, sequence numbers)


class EagerJitterBuffer(JitterRing):
    """aiortc's jitter buffer, minus the wait for the next frame's first packet, plus
    repeated NACKs and a keyframe request while a lost packet blocks it."""

    def __init__(
        self,
        capacity: int,
        is_video: bool,
        clock: Callable[[], float],
        on_missing: MissingSink | None = None,
    ) -> None:
        super().__init__(capacity=capacity, is_video=is_video)
        self._on_missing = on_missing
        self._clock = clock
        self._highest: int | None = None
        self._stuck_since: float | None = None
        self._nacked_at = 0.0
        self._pli_at: float | None = None

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        if not self.video:
            return False, JitterFrame(data=rtp_payload(packet), timestamp=packet.timestamp)
        pli_flag, frame = super().add(packet)
        if frame is None and self.origin is not None:
            frame = self._complete_frame()
            if frame is None and packet.marker:
                frame = self._skip_to_keyframe()
        self._track(packet, frame)
        if frame is None and self._stuck_since is not None:
            pli_flag = self._unblock(packet.ssrc) or pli_flag
        return pli_flag, frame

    def _track(self, packet: RtpPacket, frame: JitterFrame | None) -> None:
        """Keep the highest sequence number, and when the buffer became blocked: a frame's
        last packet is in but nothing could be released, so a packet before it is missing."""
        seq = packet.sequence_number
        if self._highest is None or 0 < uint16_add(seq, -self._highest) < 0x8000:
            self._highest = seq
        if frame is not None:
            self._stuck_since = self._pli_at = None
        elif packet.marker and self._stuck_since is None:
            self._stuck_since = self._nacked_at = self._clock()

    def _unblock(self, ssrc: int) -> bool:
        """Ask again for the missing packets; True when it is time to ask for a keyframe."""
        now = self._clock()
        if now - self._stuck_since < STUCK_PLI:  # type: ignore[operator]
            if now - self._nacked_at >= RENACK_INTERVAL and self._on_missing is not None:
                self._nacked_at = now
                holes = self.missing()
                if holes:
                    self._on_missing(ssrc, holes)
            return False
        if self._pli_at is None or now - self._pli_at >= PLI_REPEAT:
            self._pli_at = now
            return True
        return False

    def missing(self) -> list[int]:
        """Sequence numbers between the origin and the highest packet that are not in."""
        origin, ring, size = self.origin, self.ring, self.ring_size
        if origin is None or self._highest is None:
            return []
        span = uint16_add(self._highest, -origin)
        if span >= 0x8000:  # everything up to the highest was released
            return []
        holes = []
        for count in range(min(span, size)):
            if ring[(origin + count) % size] is None:
                holes.append(uint16_add(origin, count))
                if len(holes) == MAX_NACKED:
                    break
        return holes

    def next_complete(self) -> JitterFrame | None:
        """The next frame if it is already complete (frames a late packet held up)."""
        return self._complete_frame() if self.origin is not None else None

    def _skip_to_keyframe(self) -> JitterFrame | None:
        """A later keyframe is complete while an earlier frame still misses packets: nothing
        before a keyframe is needed to decode it, so drop the stuck frames and release it. The
        missing packet is what made aiortc's buffer stall for seconds (its ring of 512).
        A keyframe that itself misses packets is passed over for a later complete one: its
        packets may never come (a sender keeps only recent ones, and none from before a newer
        keyframe)."""
        origin, ring, size = self.origin, self.ring, self.ring_size
        assert origin is not None
        previous = None
        for count in range(1, size):
            packet = ring[(origin + count) % size]
            if packet is None:
                previous = None
                continue
            starts = previous is None or packet.timestamp != previous
            if starts and is_vp8_keyframe(rtp_payload(packet)) and self._complete_at(count):
                self.remove(count)
                return self._complete_frame()
            previous = packet.timestamp
        return None

    def _complete_at(self, offset: int) -> bool:
        """True when the frame starting `offset` packets after the origin has all its packets."""
        origin, ring, size = self.origin, self.ring, self.ring_size
        assert origin is not None
        timestamp = None
        for count in range(offset, size):
            packet = ring[(origin + count) % size]
            if packet is None or (timestamp is not None and packet.timestamp != timestamp):
                return False
            timestamp = packet.timestamp
            if packet.marker:
                return True
        return False

    def _complete_frame(self) -> JitterFrame | None:
        """The frame starting at the origin if all its packets are in; removes them."""
        origin, ring, size = self.origin, self.ring, self.ring_size
        assert origin is not None
        pieces: list[bytes] = []
        timestamp: int | None = None
        for count in range(size):
            packet = ring[(origin + count) % size]
            if packet is None or (timestamp is not None and packet.timestamp != timestamp):
                return None
            timestamp = packet.timestamp
            pieces.append(rtp_payload(packet))
            if packet.marker:
                self.remove(count + 1)
                return JitterFrame(data=b"".join(pieces), timestamp=timestamp)
        return None
