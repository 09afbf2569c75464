"""Real aiortc peers for end-to-end tests: a WHIP publisher (RFC 9725) and WHEP classroom players.

Both sides send a complete offer (aiortc gathers candidates inside setLocalDescription, so there
is no trickle), expect 201 with a Location and an answer, and end the session with DELETE.
What a player receives is logged per slot (FrameLog, AudioLog) so tests can assert on frame
numbers, rates and gaps without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urljoin

import aiohttp
import av
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from tests.media import read_counter

HTTP_TIMEOUT = 10.0
NEGOTIATION_TIMEOUT = 20.0
WAIT_TIMEOUT = 10.0

F = TypeVar("F", av.VideoFrame, av.AudioFrame)


def new_peer_connection(ice_servers: list[RTCIceServer] | None = None) -> RTCPeerConnection:
    """A peer with no ICE servers unless given (the default Google STUN server stalls
    gathering offline).

    max-bundle, like browsers' WHEP players: under aiortc's default "balanced" policy a second
    video transceiver stays on a transport that BUNDLE negotiation discards, and gets nothing.
    """
    return RTCPeerConnection(
        RTCConfiguration(iceServers=ice_servers or [], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    )


async def local_offer(pc: RTCPeerConnection) -> str:
    """Create and apply an offer; aiortc returns only once every candidate is in the SDP."""
    await pc.setLocalDescription(await pc.createOffer())
    return str(pc.localDescription.sdp)


async def local_answer(pc: RTCPeerConnection) -> str:
    """Create and apply an answer, candidates included."""
    await pc.setLocalDescription(await pc.createAnswer())
    return str(pc.localDescription.sdp)


# logs of what arrived


@dataclass(frozen=True, slots=True)
class FrameRecord:
    """One readable decoded frame: when it arrived and what it carried."""

    t: float
    tag: int
    number: int
    width: int
    height: int


def max_gap(times: Iterable[float], since: float = -math.inf, until: float = math.inf) -> float:
    """Longest silence between consecutive arrivals inside [since, until]; inf if under two."""
    inside = [t for t in times if since <= t <= until]
    if len(inside) < 2:
        return math.inf
    return max(b - a for a, b in itertools.pairwise(inside))


class _Arrivals:
    """Wakes waiters whenever something is logged, so tests poll on events instead of sleeping."""

    def __init__(self) -> None:
        self._grew = asyncio.Event()

    def _notify(self) -> None:
        self._grew.set()

    async def _wait_until(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        """Return once `done()` holds; TimeoutError naming `what` after `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while not done():
                    self._grew.clear()
                    await self._grew.wait()
        except TimeoutError:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}") from None


class FrameLog(_Arrivals):
    """Every decoded frame of one video slot, read back with read_counter."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[FrameRecord] = []
        self.unreadable = 0
        self.last_size = (0, 0)  # of the newest decoded frame, readable or not

    def add(self, now: float, frame: av.VideoFrame) -> FrameRecord | None:
        """Log one decoded frame; count it as unreadable when it carries no clean code."""
        self.last_size = (frame.width, frame.height)
        reading = read_counter(frame)
        if reading is None:
            self.unreadable += 1
            self._notify()
            return None
        record = FrameRecord(now, reading[0], reading[1], frame.width, frame.height)
        self.records.append(record)
        self._notify()
        return record

    @property
    def last(self) -> FrameRecord | None:
        """The newest readable frame, if any."""
        return self.records[-1] if self.records else None

    def matching(self, tag: int | None = None, start: int = 0) -> list[FrameRecord]:
        """Records from index `start` on, only those with `tag` when given."""
        return [r for r in self.records[start:] if tag is None or r.tag == tag]

    async def wait_frames(
        self, count: int, tag: int | None = None, timeout: float = WAIT_TIMEOUT
    ) -> list[FrameRecord]:
        """The next `count` readable frames (with `tag` if given) that arrive after this call."""
        start = len(self.records)
        what = f"{count} frames" + ("" if tag is None else f" with tag {tag}")
        await self._wait_until(lambda: len(self.matching(tag, start)) >= count, timeout, what)
        return self.matching(tag, start)[:count]

    def fps(self, now: float, window: float, tag: int | None = None) -> float:
        """Readable frames per second over the `window` seconds before `now`."""
        return sum(1 for r in self.matching(tag) if now - window < r.t <= now) / window

    def max_gap(self, since: float = -math.inf, until: float = math.inf) -> float:
        """Longest stall between readable frames inside [since, until]; inf if under two."""
        return max_gap((r.t for r in self.records), since, until)

    def runs(self) -> list[list[FrameRecord]]:
        """The records split wherever the source tag changes."""
        runs: list[list[FrameRecord]] = []
        for record in self.records:
            if runs and runs[-1][-1].tag == record.tag:
                runs[-1].append(record)
            else:
                runs.append([record])
        return runs

    def increasing(self, tag: int | None = None) -> bool:
        """True when numbers strictly increase within every run (of `tag`, if given)."""
        return all(
            all(a.number < b.number for a, b in itertools.pairwise(run))
            for run in self.runs()
            if tag is None or run[0].tag == tag
        )


class AudioLog(_Arrivals):
    """Arrival times of decoded audio frames."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    @property
    def count(self) -> int:
        """How many audio frames arrived."""
        return len(self.times)

    def add(self, now: float, frame: av.AudioFrame | None = None) -> None:
        """Log one decoded audio frame; its content is not checked."""
        self.times.append(now)
        self._notify()

    async def wait_frames(self, count: int, timeout: float = WAIT_TIMEOUT) -> None:
        """Return once `count` more audio frames arrived after this call."""
        target = len(self.times) + count
        await self._wait_until(lambda: len(self.times) >= target, timeout, f"{count} audio frames")

    def max_gap(self, since: float = -math.inf, until: float = math.inf) -> float:
        """Longest audio silence inside [since, until]; inf if under two frames."""
        return max_gap(self.times, since, until)


# consuming received tracks


async def _drain(track: MediaStreamTrack, kind: type[F], log: Callable[[float, F], object]) -> None:
    """Pull frames until the track ends, logging each of `kind` with the loop time it arrived."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(MediaStreamError):
        while True:
            frame = await track.recv()
            if isinstance(frame, kind):
                log(loop.time(), frame)


@dataclass
class MediaSink:
    """Consumes every track a peer receives: video slots in m-line order, and the audio."""

    video: list[FrameLog] = field(default_factory=list)
    audio: AudioLog = field(default_factory=AudioLog)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def attach(self, pc: RTCPeerConnection) -> None:
        """Start draining the receiving transceivers once the remote description is set."""
        for transceiver in pc.getTransceivers():
            track = transceiver.receiver.track
            if transceiver.kind == "video":
                self.video.append(FrameLog())
                if track is not None:
                    self._spawn(_drain(track, av.VideoFrame, self.video[-1].add))
            elif transceiver.kind == "audio" and track is not None:
                self._spawn(_drain(track, av.AudioFrame, self.audio.add))

    def _spawn(self, drain: Coroutine[Any, Any, None]) -> None:
        """Keep a reference to every task so none is garbage-collected while pending."""
        self.tasks.append(asyncio.create_task(drain))

    async def stop(self) -> None:
        """Cancel and reap every drain task, so no task outlives the test."""
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()


# HTTP


@dataclass(frozen=True, slots=True)
class HttpReply:
    """A whole HTTP response, read before the connection closed."""

    status: int
    headers: dict[str, str]
    body: str
    url: str

    @property
    def location(self) -> str | None:
        """The Location header resolved against the request URL, per RFC 9110 §10.2.2."""
        value = self.headers.get("Location")
        return None if value is None else urljoin(self.url, value)


class SignallingError(Exception):
    """The relay refused an offer; `status` and `body` say how."""

    def __init__(self, reply: HttpReply) -> None:
        super().__init__(f"HTTP {reply.status} from {reply.url}: {reply.body.strip()[:200]}")
        self.status = reply.status
        self.body = reply.body
        self.headers = reply.headers


MAX_REDIRECTS = 3


def _auth(token: str | None) -> dict[str, str]:
    """Bearer header, or none at all so tests can check the 401 path."""
    return {} if token is None else {"Authorization": f"Bearer {token}"}


async def post_sdp(
    url: str,
    token: str | None,
    sdp: str | bytes,
    content_type: str | None = "application/sdp",
) -> HttpReply:
    """POST a body as-is; for bad-input tests, any token, content type or size goes through.
    A 307 is followed with the same headers, token included, as RFC 9725 §4.5 asks of a
    client (an HTTP library drops the token when a redirect leaves the origin)."""
    headers = _auth(token)
    if content_type is not None:
        headers["Content-Type"] = content_type
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for _ in range(MAX_REDIRECTS + 1):
            async with session.post(url, data=sdp, headers=headers, allow_redirects=False) as resp:
                if resp.status != 307:
                    return HttpReply(resp.status, dict(resp.headers), await resp.text(), url)
                url = urljoin(url, resp.headers["Location"])
    raise SignallingError(HttpReply(307, {}, "too many redirects", url))


async def delete_session(url: str, token: str | None) -> int | None:
    """DELETE a WHIP/WHEP session; the status, or None when the relay is unreachable."""
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.delete(url, headers=_auth(token)) as resp,
        ):
            return resp.status
    except (aiohttp.ClientError, TimeoutError):
        return None


async def _negotiate(pc: RTCPeerConnection, url: str, token: str) -> str:
    """Offer to `url`, apply the answer, and return the session's Location."""
    reply = await post_sdp(url, token, await local_offer(pc))
    if reply.status != 201 or reply.location is None:
        raise SignallingError(reply)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=reply.body, type="answer"))
    return reply.location


async def _negotiate_or_close(pc: RTCPeerConnection, url: str, token: str, timeout: float) -> str:
    """_negotiate, bounded in time; the peer is closed if it fails so nothing leaks."""
    try:
        async with asyncio.timeout(timeout):
            return await _negotiate(pc, url, token)
    except BaseException:
        await pc.close()
        raise


# WHIP


@dataclass
class Publication:
    """A teacher's live WHIP session."""

    pc: RTCPeerConnection
    location: str
    token: str

    async def close(self) -> int | None:
        """End the session politely: DELETE, then close the peer; the DELETE status if any."""
        try:
            return await delete_session(self.location, self.token)
        finally:
            await self.pc.close()

    async def drop(self) -> None:
        """Vanish without DELETE, as when the teacher's network dies."""
        await self.pc.close()


async def whip_publish(
    base: str,
    room: str,
    token: str,
    source: str,
    video: MediaStreamTrack | None,
    audio: MediaStreamTrack | None,
    timeout: float = NEGOTIATION_TIMEOUT,
) -> Publication:
    """Publish `source` into `room`; SignallingError carries the status if the relay refuses."""
    pc = new_peer_connection()
    for track in (audio, video):
        if track is not None:
            pc.addTransceiver(track, direction="sendonly")
    url = f"{base}/whip/{room}?source={source}"
    location = await _negotiate_or_close(pc, url, token, timeout)
    return Publication(pc, location, token)


# WHEP


@dataclass
class Playback:
    """A classroom's live WHEP session and everything it has received so far."""

    pc: RTCPeerConnection
    location: str
    token: str
    sink: MediaSink

    @property
    def video(self) -> list[FrameLog]:
        """One log per video slot, in m-line order (0 = camera slot, 1 = screen slot)."""
        return self.sink.video

    @property
    def audio(self) -> AudioLog:
        """The audio arrivals."""
        return self.sink.audio

    async def wait_frames(
        self, slot: int, count: int, tag: int | None = None, timeout: float = WAIT_TIMEOUT
    ) -> list[FrameRecord]:
        """The next `count` readable frames on `slot` (with `tag` if given)."""
        return await self.video[slot].wait_frames(count, tag, timeout)

    async def close(self) -> int | None:
        """DELETE the session, close the peer and reap the drain tasks; the DELETE status."""
        try:
            return await delete_session(self.location, self.token)
        finally:
            await self.pc.close()
            await self.sink.stop()

    async def drop(self) -> None:
        """Vanish without DELETE, as when a classroom loses power."""
        await self.pc.close()
        await self.sink.stop()


async def whep_play(
    base: str,
    room: str,
    token: str,
    video_slots: int = 1,
    audio: bool = True,
    timeout: float = NEGOTIATION_TIMEOUT,
    quality: str | None = None,
) -> Playback:
    """Join `room` as a classroom with recvonly m-lines: audio first, then each video slot;
    `quality` caps the layer the relay may send (`?quality=`)."""
    pc = new_peer_connection()
    if audio:
        pc.addTransceiver("audio", direction="recvonly")
    for _ in range(video_slots):
        pc.addTransceiver("video", direction="recvonly")
    url = f"{base}/whep/{room}" + (f"?quality={quality}" if quality else "")
    location = await _negotiate_or_close(pc, url, token, timeout)
    sink = MediaSink()
    sink.attach(pc)
    return Playback(pc, location, token, sink)
