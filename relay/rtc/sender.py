"""How a classroom's down tracks leave as RTP: one fan-out pass per loop turn, no task per frame.

aiortc runs a task per sender that awaits the track's next frame, builds an RtpPacket object
per packet, and awaits four coroutine layers per packet to send it (about 45 µs a packet
measured in the bench); the relay's first packet loop kept the task per classroom and track,
woken per frame. Now:

- a down track that queues a frame wakes the process's `SendPass` (once per event-loop turn,
  however many classrooms took frames in it);
- the pass takes every woken track's queued frames and hands them, per classroom stream, to
  `relay.rtc.rtpsend.Batch`;
- `Batch.send` numbers, writes, SRTP-protects and sends all the pass's packets: natively
  (each classroom's `Stream` state lives in C, and sendmmsg(2) sends on the media socket), or
  in Python (`PyStream`).

Payload pieces are cut once per upstream frame for every classroom (`Frame.chunks`). NACKs are
answered from each stream's history of its last 128 packets, as aiortc does (rtp.py
RTP_HISTORY_SIZE). Sender reports and the forwarded-packet metrics are fed four times a second
from the streams' counters, not per frame.
The bounded per-classroom queue stays (relay/core/forwarder.py): a classroom whose transport
cannot take frames (not connected, being replaced) overflows it and restarts at a keyframe,
while the others are served by the same pass.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import weakref
from collections.abc import Callable
from typing import Any, ClassVar

from aiortc.rtcrtpsender import RTCRtpSender

from monitoring import metrics
from relay.rtc import hooks, rtpsend
from relay.rtc.downtrack import DownTrack
from relay.rtc.hooks import SenderInternals
from relay.rtc.rtpsend import RTP_HEADER, WIRE_OVERHEAD, Batch, Route, Stream, route_of

logger = logging.getLogger(__name__)

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
# Seconds between feeding sender reports and metrics from the streams' counters; aiortc
# sends a report about every second, and doing it per frame per classroom was a tenth of
# the send path.
MAINTAIN_SECONDS = 0.25
# A classroom's route (its nominated ICE pair, SRTP context) is looked up again at most this
# often, and at every NACK; aioice never renominates, and a closed connection stops its
# loops, so only a pair that failed meanwhile is used a little longer.
ROUTE_CHECK_SECONDS = 0.5
_RESENDS_KEPT = 512  # NACKed sequence numbers remembered per stream


class SendCounters:
    """What one classroom connection was sent, across its down tracks' streams: the
    estimator's input, read from the streams when asked."""

    __slots__ = ("_allowance", "_media_seen", "_resent", "_streams", "congested")

    def __init__(self) -> None:
        self._streams: list[Stream] = []
        self._resent = [0, 0]  # retransmissions: packets, bytes on the wire
        # set by the rate controller: on a congested link a lost packet is resent only once,
        # as more copies add to the overload (the classroom asks for a keyframe instead)
        self.congested = False
        self._allowance = 0.0  # bytes of retransmission earned by media sent, up to RTX_BURST
        self._media_seen = 0  # media bytes the allowance has been credited for

    def watch(self, stream: Stream) -> None:
        """Count what `stream` sends (one per down track, made when its sender starts)."""
        self._streams.append(stream)

    @property
    def media_octets(self) -> int:
        return sum(stream.wire for stream in self._streams)

    @property
    def octets(self) -> int:
        """Bytes on the wire, retransmissions included."""
        return self.media_octets + self._resent[1]

    @property
    def packets(self) -> int:
        return sum(stream.packets for stream in self._streams) + self._resent[0]

    @property
    def rtx_allowance(self) -> float:
        """Bytes of retransmission the media sent so far has earned (RTX_SHARE of it)."""
        media = self.media_octets
        credit = RTX_SHARE * (media - self._media_seen)
        self._allowance = min(self._allowance + credit, RTX_BURST)
        self._media_seen = media
        return self._allowance

    @rtx_allowance.setter
    def rtx_allowance(self, value: float) -> None:
        self._media_seen = self.media_octets
        self._allowance = value

    def spend_on_resend(self, wire: int) -> bool:
        """Count one retransmission if the allowance covers it; False means don't send it."""
        if wire > self.rtx_allowance:
            return False
        self._allowance -= wire
        self._resent[0] += 1
        self._resent[1] += wire
        return True


class PacketLoop:
    """Sends a DownTrack's frames on its RTCRtpSender's transport as one RTP stream; the
    process's `SendPass` drains it when the track queues frames."""

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
        self.video = track.kind == "video"
        self._on_first_frame = on_first_frame
        self._sender = sender
        self._counters = counters
        # random starting points, as RFC 3550 §5.1 asks; the 15-bit sequence start follows
        # aiortc, which avoids an early wraparound that breaks SRTP decryption in Chrome
        self._rtx_sequence = random.getrandbits(15)
        self._rtx_payload_type: int | None = None
        self.stream: Stream | None = None  # made when the sender starts
        self._internals: SenderInternals | None = None  # set while the sender runs
        self._transport: Any = None  # the sender's DTLS transport, while it runs
        self._route: Route | None = None
        self._native_route = False  # the stream sends natively on its route
        self._routed_at = 0.0  # loop time the route was last checked
        self._resends: dict[int, tuple[float, int]] = {}  # sequence -> (resent at, copies)
        self.reported = (0, 0)  # packets and payload octets fed to sender reports so far
        self.metered = (0, 0)  # packets and wire bytes counted in metrics so far
        self._pass = SendPass.of(asyncio.get_running_loop())
        hooks.install_packet_loop(sender, self.run, self.retransmit)

    async def run(self, internals: SenderInternals, codec: Any) -> None:
        """The sender's RTP task: it only marks the sender running until stop() cancels it;
        frames leave through the pass, with no wake-up of this task per frame."""
        internals.started()
        self._rtx_payload_type = internals.rtx_payload_type
        before, after = internals.extension_parts()
        self.stream = rtpsend.make_stream(
            rtpsend.NATIVE,
            ssrc=self._ssrc,
            payload_type=codec.payloadType,
            origin=random.getrandbits(32),
            vp8=codec.mimeType.lower() == "video/vp8",
            sequence=random.getrandbits(15),
            picture_id=random.getrandbits(15),
            before=before,
            after=after,
        )
        self._counters.watch(self.stream)
        self._internals = internals
        self._transport = self._sender.transport
        self._pass.register(self)
        # a queued frame puts this loop in the turn's pass: no wake-up of this task per frame
        self._track.on_queued = functools.partial(self._pass.wake, self)
        try:
            self._track.begin()  # the classroom is connected: start from a keyframe
            await asyncio.get_running_loop().create_future()  # until cancelled
        except asyncio.CancelledError:
            pass
        finally:
            self._track.on_queued = None
            self._pass.unregister(self)
            self._internals = None
            internals.exited()

    def reroute(self) -> None:
        """Look the route up afresh at the next pass (its transport was changed under it)."""
        self._route = None

    def _check_route(self, now: float) -> Route | None:
        stream, known = self.stream, self._route
        route = route_of(self._transport, known)
        if route is not None and route is not known and stream is not None:
            self._native_route = stream.route(route.context, route.host, route.port, route.fd)
        self._route, self._routed_at = route, now
        return route

    def drain(self, batch: Batch, now: float) -> None:
        """Hand every queued frame to `batch`. A transport not connected now keeps them
        queued: its bounded queue overflows and restarts at a keyframe."""
        stream, route = self.stream, self._route
        if stream is None:
            return
        if route is None or now - self._routed_at >= ROUTE_CHECK_SECONDS:
            route = self._check_route(now)
            if route is None:
                return
        frames = self._track.forwarder.take()
        if not frames:
            return
        batch.add(stream, route, self._native_route, frames)
        if self._on_first_frame is not None:
            self._on_first_frame()
            self._on_first_frame = None

    def report(self, ntp_time: int) -> None:
        """Feed aiortc's sender reports what the stream sent since the last call."""
        stream, internals = self.stream, self._internals
        if stream is None or internals is None:
            return
        packets, octets = stream.packets, stream.octets
        if packets != self.reported[0]:
            reported_packets, reported_octets = self.reported
            internals.account(
                packets - reported_packets, octets - reported_octets, stream.timestamp, ntp_time
            )
            self.reported = (packets, octets)

    async def retransmit(self, sequence_number: int) -> None:
        """Answer a classroom's NACK from the stream's history, as RTX when negotiated
        (RFC 4588)."""
        stream = self.stream
        if stream is None:
            return
        floor = stream.resend_floor
        if floor >= 0 and (sequence_number - floor) & 0xFFFF >= 0x8000:
            return  # before the last keyframe: the classroom's decoder no longer needs it
        packet = stream.packet(sequence_number)
        if packet is None:
            return
        now = self._clock()
        resent_at, copies = self._resends.get(sequence_number, (-1.0, 0))
        limit = 1 if self._counters.congested else MAX_RESENDS
        if now - resent_at < RESEND_INTERVAL or copies >= limit:
            return  # receivers repeat every NACK still open; one copy per interval is enough
        route = self._check_route(now)
        rtx = self._rtx_payload_type is not None
        wire = len(packet) + 2 * rtx + WIRE_OVERHEAD
        if route is None or not self._counters.spend_on_resend(wire):
            return  # the classroom left meanwhile, or the link has no room for more copies
        if len(self._resends) >= _RESENDS_KEPT:
            self._resends.clear()
        self._resends[sequence_number] = (now, copies + 1)
        if self._rtx_payload_type is not None:
            packet = self._as_rtx(packet, self._rtx_payload_type)
        try:
            route.sendto(route.protect(packet), (route.host, route.port))
        except OSError:
            return
        metrics.count_retransmission()

    def _as_rtx(self, packet: bytes, payload_type: int) -> bytes:
        """The packet as RTX (RFC 4588 §4): RTX payload type, sequence number and SSRC, the
        original sequence number before the original payload."""
        start = RTP_HEADER.size
        if packet[0] & 0x10:  # header extensions (RFC 3550 §5.3.1): their length in words
            start += 4 + 4 * int.from_bytes(packet[start + 2 : start + 4], "big")
        sequence = self._rtx_sequence
        self._rtx_sequence = (sequence + 1) & 0xFFFF
        timestamp = int.from_bytes(packet[4:8], "big")
        marked = packet[1] & 0x80 | payload_type
        header = RTP_HEADER.pack(packet[0], marked, sequence, timestamp, self._rtx_ssrc)
        return header + packet[RTP_HEADER.size : start] + packet[2:4] + packet[start:]


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
        self._loops: dict[PacketLoop, None] = {}  # every running loop, for `_maintain`
        self._maintenance: asyncio.TimerHandle | None = None
        self.sent = {"native": 0, "python": 0}  # datagrams by send path, since the start
        self.failed = 0  # datagrams the socket refused, since the start

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> SendPass:
        """The loop's pass."""
        found = cls._passes.get(loop)
        if found is None:
            found = cls._passes[loop] = SendPass(loop)
        return found

    def register(self, packet_loop: PacketLoop) -> None:
        """A sender started: feed its reports and metrics until `unregister`."""
        self._loops[packet_loop] = None
        if self._maintenance is None:
            self._maintenance = self._loop.call_later(MAINTAIN_SECONDS, self._maintain)

    def unregister(self, packet_loop: PacketLoop) -> None:
        self._meter((packet_loop,))
        self._loops.pop(packet_loop, None)
        self._woken.pop(packet_loop, None)

    def wake(self, packet_loop: PacketLoop) -> None:
        """Drain `packet_loop` in this turn's pass."""
        self._woken[packet_loop] = None
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.run)

    def run(self) -> None:
        """The pass: every woken loop's frames into one batch, then one send."""
        woken, self._woken = self._woken, {}
        self._scheduled = False
        now = self._loop.time()
        batch = Batch(rtpsend.NATIVE)  # read per pass: tests switch paths at run time
        for packet_loop in woken:
            try:
                packet_loop.drain(batch, now)
            except Exception:  # one classroom's bug must not cost the others their frame
                logger.exception("sending to one classroom failed")
        native, python, failed = batch.send(hooks.abs_send_time(hooks.ntp_time()))
        self.sent["native"] += native
        self.sent["python"] += python
        if failed:
            self.failed += failed
            metrics.count_send_failures(failed)

    def _maintain(self) -> None:
        """Four times a second: sender reports and metrics from the streams' counters."""
        self._maintenance = None
        ntp = hooks.ntp_time()
        for packet_loop in self._loops:
            packet_loop.report(ntp)
        self._meter(self._loops)
        if self._loops:
            self._maintenance = self._loop.call_later(MAINTAIN_SECONDS, self._maintain)

    @staticmethod
    def _meter(loops: Any) -> None:
        """Count what the loops' streams sent since they were last metered."""
        totals = {False: [0, 0], True: [0, 0]}
        for packet_loop in loops:
            stream = packet_loop.stream
            if stream is None:
                continue
            packets, wire = stream.packets, stream.wire
            metered_packets, metered_wire = packet_loop.metered
            total = totals[packet_loop.video]
            total[0] += packets - metered_packets
            total[1] += wire - metered_wire
            packet_loop.metered = (packets, wire)
        for video, (packets, wire) in totals.items():
            if packets:
                metrics.count_forwarded(video, packets, wire)
