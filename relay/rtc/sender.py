"""How a classroom's down tracks leave as RTP: one fan-out pass per loop turn, no task per frame.

aiortc runs a task per sender that awaits the track's next frame, builds an RtpPacket object
per packet, and awaits four coroutine layers per packet to send it (about 45 µs a packet
measured in the bench); the relay's first packet loop kept the task per classroom and track,
woken per frame. Now:

- a down track that queues a frame wakes the process's `SendPass` (once per event-loop turn,
  however many classrooms took frames in it);
- the pass drains every woken track's queue: per frame and classroom one 12-byte header
  (`struct.pack`), the extension block from a template, and one job for `relay.rtc.rtpsend`;
- `rtpsend.Batch.send` writes, SRTP-protects and sends all the pass's packets, natively with
  sendmmsg(2) on the one media socket, or in Python.

Payload pieces are cut once per upstream frame for every classroom (`Frame.chunks`). NACKs are
answered from each loop's own history of its last 128 packets, as aiortc does (rtp.py
RTP_HISTORY_SIZE); the history keeps one record per frame, not an object per packet.
The bounded per-classroom queue stays (relay/core/forwarder.py): a classroom whose transport
cannot take frames (not connected, being replaced) overflows it and restarts at a keyframe,
while the others are served by the same pass.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import struct
import weakref
from collections.abc import Callable
from typing import Any, ClassVar

from aiortc.rtcrtpsender import RTCRtpSender

from monitoring import metrics
from relay.core.codecs import VP8_DESCRIPTOR_SIZE
from relay.core.forwarder import OutFrame
from relay.rtc import hooks, rtpsend
from relay.rtc.downtrack import DownTrack
from relay.rtc.hooks import ExtensionBlock, SenderInternals
from relay.rtc.rtpsend import Batch, Route, plain_packet, route_of

logger = logging.getLogger(__name__)

HISTORY_SIZE = 128  # packets kept for retransmission, as aiortc's sender keeps
# Bytes each packet adds on the wire beyond the RTP packet: IPv4 + UDP headers (28) and the
# SRTP authentication tag (10, RFC 3711 §5.2 with HMAC-SHA1-80); links are shaped on these.
WIRE_OVERHEAD = 38
# A packet is retransmitted at most once per this many seconds (about a congested link's
# RTT) and at most MAX_RESENDS times: every NACK repeats the whole missing list, and answering
# each in full multiplied the overload of a 400 kbit/s link tenfold in our tests.
RESEND_INTERVAL = 0.25
MAX_RESENDS = 3
# Retransmissions may use at most this share of the media sent (libwebrtc likewise caps them
# with a rate limiter): on an overloaded link most packets are missing, and resending them
# all tripled the overload in our constrained-link test instead of letting the link drain.
RTX_SHARE = 0.3
# Unspent retransmission allowance kept, in bytes: enough for a burst of losses in a keyframe.
RTX_BURST = 30_000
# Sender reports are fed at most this often (in NTP units: a quarter second); aiortc sends one
# about every second, and feeding it per frame per classroom was a tenth of the send path.
ACCOUNT_EVERY = 1 << 30
# A classroom's route (its nominated ICE pair, SRTP context) is looked up again at most this
# often (NTP units: half a second), and at every NACK; aioice never renominates, and a closed
# connection stops its loops, so only a pair that failed meanwhile is used a little longer.
ROUTE_CHECK_EVERY = 1 << 31
_HEADER = struct.Struct("!BBHLL")  # RFC 3550 §5.1 fixed header: V/P/X/CC, M/PT, seq, ts, SSRC


class _SentFrame:
    """One frame as sent to one classroom, kept to answer NACKs for any of its packets."""

    __slots__ = ("chunks", "extensions", "first", "header", "picture_id", "resends")

    def __init__(
        self, header: bytes, extensions: bytes, chunks: tuple[bytes, ...], picture_id: int
    ) -> None:
        self.header = header  # that of the first packet
        self.first = header[2] << 8 | header[3]
        self.extensions = extensions
        self.chunks = chunks
        self.picture_id = picture_id
        # piece index -> (last resent at, copies); made at the first NACK, which most never get
        self.resends: dict[int, tuple[float, int]] | None = None

    def index_of(self, sequence_number: int) -> int | None:
        """Which piece of the frame carried this sequence number, if any."""
        index = (sequence_number - self.first) & 0xFFFF
        return index if index < len(self.chunks) else None


class SendCounters:
    """What one classroom connection was sent, across its down tracks: the estimator's input."""

    __slots__ = ("congested", "octets", "packets", "rtx_allowance")

    def __init__(self) -> None:
        self.octets = 0  # on the wire, retransmissions included
        self.packets = 0
        # set by the rate controller: on a congested link a lost packet is resent only once,
        # as more copies add to the overload (the classroom asks for a keyframe instead)
        self.congested = False
        self.rtx_allowance = 0.0  # bytes of retransmission earned by media sent

    def sent_media(self, packets: int, wire: int) -> None:
        """Count media packets sent; each earns RTX_SHARE of its size for retransmissions."""
        self.octets += wire
        self.packets += packets
        self.rtx_allowance = min(self.rtx_allowance + RTX_SHARE * wire, RTX_BURST)

    def spend_on_resend(self, wire: int) -> bool:
        """Count one retransmission if the allowance covers it; False means don't send it."""
        if wire > self.rtx_allowance:
            return False
        self.rtx_allowance -= wire
        self.octets += wire
        self.packets += 1
        return True


class PacketLoop:
    """Sends a DownTrack's frames through one RTCRtpSender's transport, drained by the
    process's `SendPass` when the track queues frames."""

    def __init__(
        self,
        track: DownTrack,
        sender: RTCRtpSender,
        counters: SendCounters,
        clock: Callable[[], float],
        on_first_frame: Callable[[], None] | None = None,
    ) -> None:
        self._track = track
        self._clock = clock
        self._ssrc, self._rtx_ssrc = hooks.sender_ssrcs(sender)
        self._video = track.kind == "video"
        self._on_first_frame = on_first_frame
        self._sender = sender
        self._counters = counters
        self._history: list[_SentFrame | None] = [None] * HISTORY_SIZE
        # random starting points, as RFC 3550 §5.1 asks; the 15-bit sequence start follows
        # aiortc, which avoids an early wraparound that breaks SRTP decryption in Chrome
        self._sequence = random.getrandbits(15)
        self._rtx_sequence = random.getrandbits(15)
        self._origin = random.getrandbits(32)
        self._picture_id = random.getrandbits(15)
        self._rtx_payload_type: int | None = None
        self._resend_floor: int | None = None  # first packet of the last keyframe sent
        self._payload_type = 0
        self._vp8 = False
        self._timestamp = 0  # of the last frame sent
        self._internals: SenderInternals | None = None  # set while the sender runs
        self._transport: Any = None  # the sender's DTLS transport, while it runs
        self._route: Route | None = None
        self._routed_at = 0  # NTP time the route was last checked
        # what sender reports still have to count: aiortc reads it about once a second
        self._unaccounted = [0, 0]  # packets, payload octets
        self._accounted_at = 0  # NTP time
        self._extensions: ExtensionBlock | None = None
        self._pass = SendPass.of(asyncio.get_running_loop())
        hooks.install_packet_loop(sender, self.run, self.retransmit)

    async def run(self, internals: SenderInternals, codec: Any) -> None:
        """The sender's RTP task: it only marks the sender running until stop() cancels it;
        frames leave through the pass, with no wake-up of this task per frame."""
        internals.started()
        self._rtx_payload_type = internals.rtx_payload_type
        self._payload_type = codec.payloadType
        self._vp8 = codec.mimeType.lower() == "video/vp8"
        self._extensions = internals.extensions()
        self._internals = internals
        self._transport = self._sender.transport
        # a queued frame puts this loop in the turn's pass: no wake-up of this task per frame
        self._track.on_queued = functools.partial(self._pass.wake, self)
        try:
            self._track.begin()  # the classroom is connected: start from a keyframe
            await asyncio.get_running_loop().create_future()  # until cancelled
        except asyncio.CancelledError:
            pass
        finally:
            self._track.on_queued = None
            self._internals = None
            internals.exited()

    def reroute(self) -> None:
        """Look the route up afresh at the next pass (its transport was changed under it)."""
        self._route = None

    def drain(self, batch: Batch, ntp_time: int, abs_send_time: int) -> None:
        """Send every queued frame into `batch`. A transport not connected now keeps them
        queued: its bounded queue overflows and restarts at a keyframe."""
        internals, extensions = self._internals, self._extensions
        if internals is None or extensions is None:
            return
        route = self._route
        if route is None or ntp_time - self._routed_at >= ROUTE_CHECK_EVERY:
            route = self._route = route_of(self._transport, route)
            self._routed_at = ntp_time
            if route is None:
                return
        block = extensions(abs_send_time)
        pop = self._track.forwarder.pop
        packets = wire = 0
        while (frame := pop()) is not None:
            count, size = self._send_frame(batch, route, frame, block)
            packets, wire = packets + count, wire + size
        if not packets:
            return
        self._counters.sent_media(packets, wire)
        self._pass.forwarded(self._video, packets, wire)
        if ntp_time - self._accounted_at >= ACCOUNT_EVERY:
            count, octets = self._unaccounted
            internals.account(count, octets, self._timestamp, ntp_time)
            self._unaccounted, self._accounted_at = [0, 0], ntp_time
        if self._on_first_frame is not None:
            self._on_first_frame()
            self._on_first_frame = None

    def _send_frame(
        self, batch: Batch, route: Route, frame: OutFrame, extensions: bytes
    ) -> tuple[int, int]:
        """One frame as one job: its pieces are numbered on from the header's sequence number,
        and the marker bit closes the frame. Returns its packets and bytes on the wire."""
        timestamp = self._timestamp = (self._origin + frame.timestamp) & 0xFFFFFFFF
        chunks = frame.chunks or (frame.data,)
        count = len(chunks)
        sequence = self._sequence
        first_byte = 0x90 if extensions else 0x80
        header = _HEADER.pack(first_byte, self._payload_type, sequence, timestamp, self._ssrc)
        vp8 = self._vp8
        picture_id = self._picture_id if vp8 else -1
        if vp8:
            self._picture_id = (self._picture_id + 1) & 0x7FFF
            if frame.keyframe:
                self._resend_floor = sequence  # what came before it is no longer needed
        batch.add(route, header, extensions, chunks, picture_id)
        sent = _SentFrame(header, extensions, chunks, picture_id)
        history = self._history
        for offset in range(count):
            history[(sequence + offset) % HISTORY_SIZE] = sent
        self._sequence = (sequence + count) & 0xFFFF
        octets = len(frame.data) + VP8_DESCRIPTOR_SIZE * count * vp8
        unaccounted = self._unaccounted
        unaccounted[0] += count
        unaccounted[1] += octets
        return count, octets + count * (_HEADER.size + len(extensions) + WIRE_OVERHEAD)

    async def retransmit(self, sequence_number: int) -> None:
        """Answer a classroom's NACK from our history, as RTX when negotiated (RFC 4588)."""
        sent = self._history[sequence_number % HISTORY_SIZE]
        index = None if sent is None else sent.index_of(sequence_number)
        if sent is None or index is None:
            return
        floor = self._resend_floor
        if floor is not None and (sequence_number - floor) & 0xFFFF >= 0x8000:
            return  # before the last keyframe: the classroom's decoder no longer needs it
        now = self._clock()
        if sent.resends is None:
            sent.resends = {}
        resent_at, copies = sent.resends.get(index, (-1.0, 0))
        limit = 1 if self._counters.congested else MAX_RESENDS
        if now - resent_at < RESEND_INTERVAL or copies >= limit:
            return  # receivers repeat every NACK still open; one copy per interval is enough
        route = self._route = route_of(self._sender.transport, self._route)
        self._routed_at = hooks.ntp_time()
        packet = plain_packet(sent.header, sent.extensions, sent.chunks, sent.picture_id, index)
        rtx = self._rtx_payload_type is not None
        wire = len(packet) + 2 * rtx + WIRE_OVERHEAD
        if route is None or not self._counters.spend_on_resend(wire):
            return  # the classroom left meanwhile, or the link has no room for more copies
        sent.resends[index] = (now, copies + 1)
        if self._rtx_payload_type is not None:
            packet = self._as_rtx(packet, sent.extensions, self._rtx_payload_type)
        try:
            route.sendto(route.protect(packet), (route.host, route.port))
        except OSError:
            return
        metrics.count_retransmission()

    def _as_rtx(self, packet: bytes, extensions: bytes, payload_type: int) -> bytes:
        """The packet as RTX (RFC 4588 §4): RTX payload type, sequence number and SSRC, the
        original sequence number before the original payload."""
        sequence = self._rtx_sequence
        self._rtx_sequence = (sequence + 1) & 0xFFFF
        timestamp = int.from_bytes(packet[4:8], "big")
        marked = packet[1] & 0x80 | payload_type
        header = _HEADER.pack(packet[0], marked, sequence, timestamp, self._rtx_ssrc)
        payload = packet[_HEADER.size + len(extensions) :]
        return header + extensions + packet[2:4] + payload


class SendPass:
    """Drains every woken packet loop once per event-loop turn and sends their packets in one
    batch: the fan-out of a frame to all its classrooms is one loop, with no per-classroom
    task wake-up. One per event loop."""

    _passes: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SendPass]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._woken: dict[PacketLoop, None] = {}  # insertion-ordered set
        self._scheduled = False
        self._packets = [0, 0]  # forwarded in this pass: audio, video
        self._wire = [0, 0]
        self.passes = 0
        self.sent = {"native": 0, "python": 0}  # datagrams by send path, since the start
        self.failed = 0  # datagrams the socket refused, since the start

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> SendPass:
        """The loop's pass."""
        found = cls._passes.get(loop)
        if found is None:
            found = cls._passes[loop] = SendPass(loop)
        return found

    def wake(self, packet_loop: PacketLoop) -> None:
        """Drain `packet_loop` in this turn's pass."""
        self._woken[packet_loop] = None
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.run)

    def forwarded(self, video: bool, packets: int, wire: int) -> None:
        """Count one frame sent to one classroom; metered once per pass."""
        self._packets[video] += packets
        self._wire[video] += wire

    def run(self) -> None:
        """The pass: every woken loop's frames into one batch, then one send."""
        woken, self._woken = self._woken, {}
        self._scheduled = False
        self.passes += 1
        ntp = hooks.ntp_time()
        abs_send_time = hooks.abs_send_time(ntp)
        batch = Batch(rtpsend.NATIVE)  # read per pass: tests switch paths at run time
        for packet_loop in woken:
            try:
                packet_loop.drain(batch, ntp, abs_send_time)
            except Exception:  # one classroom's bug must not cost the others their frame
                logger.exception("sending to one classroom failed")
        native, python, failed = batch.send()
        self.sent["native"] += native
        self.sent["python"] += python
        if failed:
            self.failed += failed
            metrics.count_send_failures(failed)
        for video in (False, True):
            if self._packets[video]:
                metrics.count_forwarded(video, self._packets[video], self._wire[video])
        self._packets, self._wire = [0, 0], [0, 0]
