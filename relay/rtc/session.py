"""Peer connections for one teacher publication (WHIP) or one classroom playback (WHEP).

Both negotiate as answerer with transceivers created *before* the offer is applied, so the
codec preferences (VP8 + RTX, Opus) bind: a Safari offer listing H.264 first still gets VP8.

They are created in the offer's m-line order. aiortc 1.16 gives the i-th transceiver of a kind
to the i-th m-line of that kind, and under max-bundle every transceiver shares the ICE
transport of the first one created. Applying the offer's BUNDLE group, aiortc stops the
transport of each bundled m-line whose transceiver was not created as bundled: were the first
transceiver created not the one of the first m-line (audio created first, a video-first
offer), that is the one shared transport, and the answer goes out without candidates.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.exceptions import InvalidAccessError, InvalidStateError, OperationError

from monitoring import metrics
from relay.config import MediaConfig
from relay.core.allocator import AbrParams
from relay.core.errors import BadRequest
from relay.core.ladder import Rendition
from relay.core.model import FeedKey, SlotKey
from relay.rtc import hooks
from relay.rtc.abr import ClassroomRate
from relay.rtc.downtrack import DownTrack
from relay.rtc.remote import RemoteLadder, RungPulls
from relay.rtc.sdp import codec_preferences, normalize_offer
from relay.rtc.sender import PacketLoop, SendCounters
from relay.rtc.upstream import Upstream

logger = logging.getLogger(__name__)

# What aiortc 1.16 raises on offers it parsed but cannot negotiate (found by tests/fuzz.py).
NEGOTIATION_ERRORS = (
    ValueError,
    AttributeError,
    KeyError,
    IndexError,
    TypeError,
    AssertionError,
    InvalidAccessError,
    InvalidStateError,
    OperationError,
)

# Connection states after which a session is over (W3C webrtc-pc §4.3.3).
DEAD_STATES = frozenset({"failed", "closed"})

# WHIP and WHEP require BUNDLE (RFC 9725 §4.2). max-bundle also matters for aiortc 1.16: under
# the default "balanced" policy a second pre-created video transceiver keeps the first one's
# transport, which BUNDLE negotiation then discards, so that sender never starts.
# No ICE servers: the relay is the publicly reachable end, its host candidates are what peers
# need, and aiortc's default (a Google STUN server) would stall gathering on closed networks.
PC_CONFIG = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


class Session:
    """Owns one RTCPeerConnection and reports its death once."""

    def __init__(
        self,
        room: str,
        session_id: str,
        name: str,
        on_dead: Callable[[str], None],
        sockets: hooks.HostSockets | None,
    ) -> None:
        self.room = room
        self.id = session_id
        self.name = name
        self.pc = RTCPeerConnection(PC_CONFIG)
        hooks.use_process_certificate(self.pc)
        self._sockets = sockets  # the process's one media socket; None: aioice's own
        self._clock = asyncio.get_running_loop().time
        self._on_dead = on_dead
        self._closing = False
        self.pc.on("connectionstatechange", self._state_changed)

    def _state_changed(self) -> None:
        if self.pc.connectionState in DEAD_STATES and not self._closing:
            logger.info(
                "session %s in room %s: connection %s", self.id, self.room, self.pc.connectionState
            )
            self._on_dead(self.id)

    async def _answer(self, offer: str) -> str:
        """Apply the offer and return our complete answer (ICE gathered, no trickle).

        What aiortc raises while applying a peer's offer is about that offer: its parser and
        its negotiation accept SDP they then trip over (a clock rate of 0, a transport a
        malformed BUNDLE left without). It is a 400 naming the error, logged once."""
        try:
            description = RTCSessionDescription(normalize_offer(offer), "offer")
            await self.pc.setRemoteDescription(description)
            if self._sockets is not None:
                hooks.share_host_sockets(self.pc, self._sockets)
            await self.pc.setLocalDescription(await self.pc.createAnswer())
        except NEGOTIATION_ERRORS as exc:
            logger.info("session %s: offer not usable: %r", self.id, exc)
            raise BadRequest(f"unusable SDP offer: {exc or type(exc).__name__}") from None
        answer = str(self.pc.localDescription.sdp)
        if "\na=candidate:" not in answer:
            raise BadRequest("unusable SDP offer: no ICE transport could be set up for it")
        return answer

    async def close(self) -> None:
        """Close the peer connection; safe to call more than once."""
        self._closing = True
        await self.pc.close()


class PublishSession(Session):
    """The teacher's upstream connection for one source."""

    def __init__(
        self,
        room: str,
        session_id: str,
        name: str,
        source: str,
        on_dead: Callable[[str], None],
        sockets: hooks.HostSockets | None,
    ) -> None:
        super().__init__(room, session_id, name, on_dead, sockets)
        self.source = source
        self.upstreams: dict[FeedKey, Upstream] = {}
        self.started_at = self._clock()

    async def start(
        self,
        offer: str,
        kinds: tuple[str, ...],
        media: MediaConfig,
        renditions: tuple[Rendition, ...],
    ) -> str:
        """Negotiate receive-only transceivers, one per m-line in `kinds` order (at most one of
        each kind), and tap their receivers; returns the answer."""
        transceivers: dict[str, RTCRtpTransceiver] = {}
        for kind in kinds:
            transceivers[kind] = self.pc.addTransceiver(kind, direction="recvonly")
            transceivers[kind].setCodecPreferences(codec_preferences(kind))
        answer = await self._answer(offer)
        for kind, transceiver in transceivers.items():
            feed = FeedKey(self.source, kind)
            receiver = transceiver.receiver
            self.upstreams[feed] = Upstream(self.room, feed, receiver, media, renditions)
        return answer

    def last_sign_of_life(self) -> float:
        """Loop time of the newest frame from any of this source's tracks, or of the start."""
        times = [u.last_frame_at for u in self.upstreams.values() if u.last_frame_at is not None]
        return max(times, default=self.started_at)

    async def close(self) -> None:
        for upstream in self.upstreams.values():
            upstream.close()
        await super().close()


class PullSession(PublishSession):
    """An edge node's pull of a room's lesson from its origin node: a WHEP client whose
    tracks become this node's upstreams, as if the teacher published here (scale-out)."""

    # what a two-video-slot classroom of the origin receives: audio, the camera, and the
    # screen share while there is one; they become this node's camera and screen sources
    FEEDS: tuple[FeedKey, ...] = (
        FeedKey("camera", "audio"),
        FeedKey("camera", "video"),
        FeedKey("screen", "video"),
    )
    CAMERA_KINDS = frozenset({"audio", "video"})

    @staticmethod
    def screen_session(session_id: str) -> str:
        """The room model's id for the screen share a pull carries (one per source)."""
        return f"{session_id}:screen"

    rungs: RungPulls | None = None  # the rungs its video feeds take from the origin

    async def offer(
        self, media: MediaConfig, renditions: tuple[Rendition, ...], rungs: RungPulls | None
    ) -> str:
        """Receive-only transceivers tapped from the start; returns the complete offer. With
        `rungs`, the video feeds' renditions come from the origin, not from a ladder here."""
        self.rungs = rungs
        for feed in self.FEEDS:
            transceiver = self.pc.addTransceiver(feed.kind, direction="recvonly")
            transceiver.setCodecPreferences(codec_preferences(feed.kind))
            receiver = transceiver.receiver
            made = renditions if rungs is None else ()
            upstream = Upstream(self.room, feed, receiver, media, made)
            if rungs is not None and upstream.video:
                upstream.ladder = RemoteLadder(feed, renditions, rungs)
            self.upstreams[feed] = upstream
        if self._sockets is not None:
            hooks.share_host_sockets(self.pc, self._sockets)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept(self, answer: str) -> None:
        """Apply the origin's answer; media flows once ICE and DTLS complete."""
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        except NEGOTIATION_ERRORS as exc:
            raise BadRequest(f"the origin's answer is unusable: {exc!r}") from None

    def track(self, feed: FeedKey) -> Upstream | None:
        """The pulled track of one feed (a rung pull's camera or screen video)."""
        return self.upstreams.get(feed)

    async def close(self) -> None:
        if self.rungs is not None:
            await self.rungs.close()
        await super().close()


class RungPullSession(PullSession):
    """An edge's pull of one rendition rung from the origin: camera and screen video at that
    rung (`?quality=`), made once there for every node."""

    FEEDS = (FeedKey("camera", "video"), FeedKey("screen", "video"))


class PlaySession(Session):
    """One classroom's downstream connection: an audio track and up to two video slots."""

    def __init__(
        self,
        room: str,
        session_id: str,
        name: str,
        on_dead: Callable[[str], None],
        sockets: hooks.HostSockets | None,
    ) -> None:
        super().__init__(room, session_id, name, on_dead, sockets)
        self.tracks: dict[SlotKey, DownTrack] = {}
        self.loops: dict[SlotKey, PacketLoop] = {}
        self.counters = SendCounters()
        self.rate: ClassroomRate | None = None
        self.created = self._clock()
        self.join_seconds: float | None = None
        self.node = False  # another node of the cluster pulling the lesson, not a classroom

    async def start(
        self,
        offer: str,
        slots: tuple[SlotKey, ...],
        media: MediaConfig,
        renditions: tuple[Rendition, ...],
        cap: str | None,
    ) -> str:
        """Negotiate send-only transceivers, one down track per slot in m-line order; returns
        the answer."""
        limits = {"audio": media.audio_queue_packets, "video": media.video_queue_frames}
        senders = {}
        for slot in slots:
            track = DownTrack(slot.kind, limits[slot.kind])
            transceiver = self.pc.addTransceiver(track, direction="sendonly")
            transceiver.setCodecPreferences(codec_preferences(slot.kind))
            hooks.on_keyframe_request(transceiver.sender, track.picture_lost)
            first = self._joined if slot.kind == "video" else None
            loop = PacketLoop(track, transceiver.sender, self.counters, self._clock, first)
            self.loops[slot] = loop
            self.tracks[slot] = track
            senders[slot] = transceiver.sender
        self.rate = ClassroomRate(self.tracks, senders, self.counters, renditions, cap, AbrParams())
        answer = await self._answer(offer)
        if not self.node:
            # another node's pull keeps the layer chosen when its feed is assigned (the source,
            # or the rung it asked for): a link between servers is no classroom's, and moving
            # it down would freeze every classroom of that node at once
            self.rate.start()
        return answer

    def _joined(self) -> None:
        """The first video frame went out: the classroom has joined, as people perceive it."""
        if self.join_seconds is None:
            self.join_seconds = self._clock() - self.created
            metrics.observe_join(self.join_seconds)

    def assign(self, slot: SlotKey, upstream: Upstream | None) -> None:
        """Carry `upstream` on one down track, at the layer the classroom's link allows."""
        if self.rate is not None and slot in self.tracks:
            self.rate.assign(slot, upstream)

    async def close(self) -> None:
        if self.rate is not None:
            self.rate.stop()
        for track in self.tracks.values():
            track.stop()
        await super().close()


async def close_quietly(session: Session) -> None:
    """Close a session during cleanup, logging instead of raising."""
    try:
        await asyncio.wait_for(session.close(), timeout=5)
    except Exception as exc:  # aiortc fails to close some half-negotiated connections
        logger.warning("closing session %s failed: %r", session.id, exc)
        session.pc.remove_all_listeners()  # nothing of ours keeps it alive then
