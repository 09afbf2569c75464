"""The packet loop that sends one classroom's down track as RTP, in place of aiortc's.

aiortc's sender loop spends, per packet and per classroom, an RtpPacket object, header
extension encoding, a clock read and serialization (about 45 µs a packet measured in the
bench). Here the frame is cut into payload pieces once per upstream frame for every classroom
(`Frame.chunks`), header extensions are encoded once per frame, and each packet is one
struct.pack plus the SRTP and socket work that cannot be shared. NACKs are answered from this
loop's own history of the last 128 packets, as aiortc does (rtp.py RTP_HISTORY_SIZE).
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections.abc import Callable
from typing import Any

from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpsender import RTCRtpSender

from monitoring import metrics
from relay.core.codecs import vp8_descriptor
from relay.core.forwarder import OutFrame
from relay.rtc.downtrack import DownTrack
from relay.rtc.hooks import (
    SenderInternals,
    direct_rtp_sender,
    install_packet_loop,
    sender_ssrcs,
)

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
_HEADER = struct.Struct("!BBHLL")  # RFC 3550 §5.1 fixed header: V/P/X/CC, M/PT, seq, ts, SSRC


class _Sent:
    """One sent packet, kept to answer a NACK."""

    __slots__ = (
        "extensions",
        "marker",
        "payload",
        "resends",
        "resent_at",
        "sequence_number",
        "timestamp",
    )

    def __init__(
        self, sequence_number: int, timestamp: int, marker: int, extensions: bytes, payload: bytes
    ) -> None:
        self.sequence_number = sequence_number
        self.timestamp = timestamp
        self.marker = marker
        self.extensions = extensions
        self.payload = payload
        self.resent_at = -1.0
        self.resends = 0


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
    """Sends a DownTrack's frames through one RTCRtpSender's transport."""

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
        self._ssrc, self._rtx_ssrc = sender_ssrcs(sender)
        self._video = track.kind == "video"
        self._on_first_frame = on_first_frame
        self._sender = sender
        self._counters = counters
        self._history: list[_Sent | None] = [None] * HISTORY_SIZE
        # random starting points, as RFC 3550 §5.1 asks; the 15-bit sequence start follows
        # aiortc, which avoids an early wraparound that breaks SRTP decryption in Chrome
        self._sequence = random.getrandbits(15)
        self._rtx_sequence = random.getrandbits(15)
        self._origin = random.getrandbits(32)
        self._picture_id = random.getrandbits(15)
        self._rtx_payload_type: int | None = None
        self._resend_floor: int | None = None  # first packet of the last keyframe sent
        self._payload_type = 0
        install_packet_loop(sender, self.run, self.retransmit)

    async def run(self, internals: SenderInternals, codec: Any) -> None:
        """The sender's RTP task: frames in, packets out, until the sender stops."""
        internals.started()
        self._rtx_payload_type = internals.rtx_payload_type
        self._payload_type = codec.payloadType
        vp8 = codec.mimeType.lower() == "video/vp8"
        try:
            while True:
                frame = await self._track.next_frame()
                self._send_frame(internals, frame, codec.payloadType, vp8)
        except (asyncio.CancelledError, ConnectionError, MediaStreamError):
            pass
        except Exception:
            logger.exception("packet loop of %s track failed", self._track.kind)
        finally:
            internals.exited()

    def _send_frame(
        self, internals: SenderInternals, frame: OutFrame, payload_type: int, vp8: bool
    ) -> None:
        """Packetize one frame and send it; the marker bit closes the frame."""
        timestamp = (self._origin + frame.timestamp) & 0xFFFFFFFF
        extensions = internals.extension_block()
        first_byte = 0x90 if extensions else 0x80
        chunks = frame.chunks or (frame.data,)
        last = len(chunks) - 1
        ssrc = self._ssrc
        send = direct_rtp_sender(self._sender.transport)
        if send is None:
            raise ConnectionError("classroom transport not connected")
        octets = wire = 0
        if frame.keyframe and vp8:
            self._resend_floor = self._sequence  # what came before it is no longer needed
        for index, chunk in enumerate(chunks):
            payload = vp8_descriptor(index == 0, self._picture_id) + chunk if vp8 else chunk
            marker = int(index == last)
            sequence = self._sequence
            header = _HEADER.pack(first_byte, marker << 7 | payload_type, sequence, timestamp, ssrc)
            self._history[sequence % HISTORY_SIZE] = _Sent(
                sequence, timestamp, marker, extensions, payload
            )
            self._sequence = (sequence + 1) & 0xFFFF
            octets += len(payload)
            packet = header + extensions + payload
            wire += len(packet) + WIRE_OVERHEAD
            send(packet)
        if vp8:
            self._picture_id = (self._picture_id + 1) & 0x7FFF
        internals.account(len(chunks), octets, timestamp)
        self._counters.sent_media(len(chunks), wire)
        metrics.count_forwarded(self._video, len(chunks), wire)
        if self._on_first_frame is not None:
            self._on_first_frame()
            self._on_first_frame = None

    async def retransmit(self, sequence_number: int) -> None:
        """Answer a classroom's NACK from our history, as RTX when negotiated (RFC 4588)."""
        sent = self._history[sequence_number % HISTORY_SIZE]
        if sent is None or sent.sequence_number != sequence_number:
            return
        floor = self._resend_floor
        if floor is not None and (sequence_number - floor) & 0xFFFF >= 0x8000:
            return  # before the last keyframe: the classroom's decoder no longer needs it
        now = self._clock()
        limit = 1 if self._counters.congested else MAX_RESENDS
        if now - sent.resent_at < RESEND_INTERVAL or sent.resends >= limit:
            return  # receivers repeat every NACK still open; one copy per interval is enough
        send = direct_rtp_sender(self._sender.transport)
        rtx = self._rtx_payload_type is not None
        wire = len(sent.extensions) + len(sent.payload) + _HEADER.size + 2 * rtx + WIRE_OVERHEAD
        if send is None or not self._counters.spend_on_resend(wire):
            return  # the classroom left meanwhile, or the link has no room for more copies
        sent.resent_at, sent.resends = now, sent.resends + 1
        first_byte = 0x90 if sent.extensions else 0x80
        if self._rtx_payload_type is None:
            payload_type, sequence, ssrc = self._payload_type, sequence_number, self._ssrc
            payload = sent.payload
        else:
            payload_type, sequence, ssrc = (
                self._rtx_payload_type,
                self._rtx_sequence,
                self._rtx_ssrc,
            )
            self._rtx_sequence = (self._rtx_sequence + 1) & 0xFFFF
            payload = struct.pack("!H", sequence_number) + sent.payload
        header = _HEADER.pack(
            first_byte, sent.marker << 7 | payload_type, sequence, sent.timestamp, ssrc
        )
        send(header + sent.extensions + payload)
        metrics.count_retransmission()
