"""Janus Gateway as the benchmark's reference SFU: a private server, and VideoRoom peers for it.

Janus is only driven from outside: we write its config, start the Debian binary, and speak its
HTTP API (POST requests, long-poll GET for asynchronous plugin events). Both sides put every
candidate in their SDP: aiortc gathers inside setLocalDescription, and Janus, in its default
half-trickle mode, waits for its own gathering before it sends an offer or answer. So neither
side trickles.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import subprocess
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription

log = logging.getLogger(__name__)

Json = dict[str, Any]

VIDEOROOM = "janus.plugin.videoroom"
PLUGIN_LIB = "libjanus_videoroom.so"
TRANSPORT_LIB = "libjanus_http.so"
# Where Debian's package (the one ensure_janus installs) puts plugins/ and transports/.
LIB_DIR = Path(f"/usr/lib/{sysconfig.get_config_var('MULTIARCH')}/janus")
RTP_PORTS = "20000-40000"
DEBUG_LEVEL = 4  # Janus' default: errors, warnings and info, enough to diagnose a failed start
START_TIMEOUT = 20.0
STOP_GRACE = 5.0
REQUEST_TIMEOUT = 10.0
NEGOTIATION_TIMEOUT = 20.0
INSTALL_TIMEOUT = 600.0
# Janus answers an idle long poll with a keepalive after 30 s; wait a little longer than that.
POLL_TIMEOUT = 45.0
POLL_MAX_EVENTS = 10
ROOM_EXISTS = 427  # VideoRoom's error code for `create` on a room id that is taken
PUBLISHERS = 4  # one teacher, with headroom for a stale feed that Janus has not reaped yet


class JanusError(RuntimeError):
    """Janus refused a request; `code` is its error code, the message its reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"Janus error {code}: {reason}")
        self.code = code


# the binary


def ensure_janus() -> str:
    """Janus' path; installed from Debian when missing and we are root, since the bench needs it."""
    found = shutil.which("janus")
    if found is not None:
        return found
    if os.geteuid() != 0:
        raise RuntimeError("Janus is not installed and we are not root: apt-get install janus")
    _apt_install("janus")
    if (found := shutil.which("janus")) is None:
        raise RuntimeError("apt-get installed janus, but no `janus` binary is on PATH")
    return found


def _apt_install(package: str) -> None:
    """apt-get update + install, quietly; RuntimeError with apt's words when it fails."""
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package]
    steps = [["apt-get", "update", "-qq"], ["env", "DEBIAN_FRONTEND=noninteractive", *install]]
    for step in steps:
        try:
            subprocess.run(step, check=True, capture_output=True, timeout=INSTALL_TIMEOUT)
        except (OSError, subprocess.SubprocessError) as error:
            detail = getattr(error, "stderr", b"") or b""
            message = detail.decode(errors="replace").strip()[-500:]
            raise RuntimeError(f"could not install {package}: {error} {message}") from error


# the server


def render_jcfg(sections: dict[str, Json]) -> str:
    """A libconfig file from plain dicts; JSON string quoting is valid libconfig."""
    lines: list[str] = []
    for name, settings in sections.items():
        lines.append(f"{name}: {{")
        lines += [f"\t{key} = {json.dumps(value)}" for key, value in settings.items()]
        lines.append("}")
    return "\n".join(lines) + "\n"


def _core_config(root: Path, http_port: int) -> dict[str, dict[str, Json]]:
    """The three config files: one transport (HTTP on loopback) and one plugin (VideoRoom)."""
    general = {
        "configs_folder": str(root / "conf"),
        "plugins_folder": str(root / "plugins"),
        "transports_folder": str(root / "transports"),
        "events_folder": str(root / "events"),  # empty: no event handlers
        "loggers_folder": str(root / "loggers"),  # empty: no external loggers
        "debug_level": DEBUG_LEVEL,
        "debug_colors": False,  # a plain-text log file
        "debug_timestamps": True,
        "session_timeout": 0,  # bench sessions live for the whole run without keepalives
    }
    http = {"base_path": "/janus", "http": True, "ip": "127.0.0.1", "port": http_port}
    return {
        "janus.jcfg": {
            "general": general,
            "media": {"rtp_port_range": RTP_PORTS},
            "nat": {"ice_ignore_list": "vmnet"},  # and no STUN server
            "events": {"broadcast": False},
        },
        "janus.transport.http.jcfg": {
            "general": {**http, "https": False, "json": "compact"},
            "admin": {"admin_http": False, "admin_https": False},
        },
        "janus.plugin.videoroom.jcfg": {"general": {}},
    }


def write_janus_folders(root: Path, http_port: int) -> None:
    """Private config, plugin and transport folders, so nothing else Janus ships gets loaded."""
    if not (LIB_DIR / "plugins" / PLUGIN_LIB).exists():
        raise RuntimeError(f"no {PLUGIN_LIB} in {LIB_DIR}/plugins: is Debian's janus installed?")
    for name in ("conf", "plugins", "transports", "events", "loggers"):
        (root / name).mkdir(parents=True, exist_ok=True)
    for file, sections in _core_config(root, http_port).items():
        (root / "conf" / file).write_text(render_jcfg(sections))
    for folder, module in (("plugins", PLUGIN_LIB), ("transports", TRANSPORT_LIB)):
        link = root / folder / module
        link.unlink(missing_ok=True)
        link.symlink_to(LIB_DIR / folder / module)


class JanusServer:
    """One Janus process with only VideoRoom and HTTP on 127.0.0.1, logging under `workdir`."""

    def __init__(self, workdir: Path, http_port: int) -> None:
        self.workdir = workdir
        self.http_port = http_port
        self.root = workdir / f"janus-{http_port}"
        self.log_path = workdir / "janus.log"
        self.name = f"ketang-bench-{secrets.token_hex(4)}"  # tells our Janus from one on the port
        self._process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        """The Janus process id, for CPU and memory sampling."""
        if self._process is None:
            raise RuntimeError("Janus is not running")
        return self._process.pid

    @property
    def url(self) -> str:
        """The Janus API root."""
        return f"http://127.0.0.1:{self.http_port}/janus"

    def command(self, binary: str) -> list[str]:
        """The janus command line: private folders, file log, no session timeout."""
        conf = self.root / "conf"
        return [
            *(binary, "-C", str(conf / "janus.jcfg"), "-F", str(conf)),
            *("-P", str(self.root / "plugins"), "-L", str(self.log_path), "-N", "-o", "-D"),
            *("-d", str(DEBUG_LEVEL), "-s", "0", "-r", RTP_PORTS, "-n", self.name),
        ]

    async def start(self) -> None:
        """Write the folders, launch Janus, and return once its API answers."""
        binary = await asyncio.to_thread(ensure_janus)
        self.workdir.mkdir(parents=True, exist_ok=True)
        write_janus_folders(self.root, self.http_port)
        self._log = self.log_path.open("ab")
        self._process = await asyncio.create_subprocess_exec(
            *self.command(binary), stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log
        )
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise

    async def _wait_ready(self) -> None:
        """Poll /info until it answers; RuntimeError with the log tail if Janus dies or stalls."""
        process = self._process
        assert process is not None
        timeout = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            deadline = asyncio.get_running_loop().time() + START_TIMEOUT
            while asyncio.get_running_loop().time() < deadline:
                if process.returncode is not None:
                    raise RuntimeError(f"janus exited ({process.returncode}):\n{self.log_tail()}")
                if await _answers_as(http, f"{self.url}/info", self.name):
                    return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"janus did not answer within {START_TIMEOUT}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """The end of Janus' log, to explain a failure."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self) -> None:
        """SIGTERM, SIGKILL after STOP_GRACE seconds, and reap."""
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


async def _answers_as(http: aiohttp.ClientSession, url: str, name: str) -> bool:
    """True when the Janus called `name` answers /info at `url` right now."""
    try:
        async with http.get(url) as response:
            info = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return False
    return isinstance(info, dict) and info.get("server-name") == name


# the API


@dataclass(frozen=True, slots=True)
class PluginReply:
    """A plugin's answer to one message: its data, and the SDP when it negotiates."""

    data: Json
    jsep: Json | None


def _check(reply: Json) -> Json:
    """The reply itself, or JanusError when Janus or the plugin refused."""
    if reply.get("janus") == "error":
        error = reply.get("error", {})
        raise JanusError(int(error.get("code", 0)), str(error.get("reason", "unknown")))
    data = reply.get("plugindata", {}).get("data", {})
    if "error_code" in data:
        raise JanusError(int(data["error_code"]), str(data.get("error", "unknown")))
    return reply


async def _post(http: aiohttp.ClientSession, url: str, payload: Json) -> Json:
    """One API request; the checked reply."""
    payload = {"transaction": secrets.token_hex(8), **payload}
    async with http.post(url, json=payload) as response:
        reply: Json = await response.json(content_type=None)
    return _check(reply)


class JanusSession:
    """One API session: requests by POST, asynchronous events by long poll, by transaction."""

    def __init__(self, http: aiohttp.ClientSession, url: str, session_id: int) -> None:
        self.url = f"{url}/{session_id}"
        self._http = http
        self._pending: dict[str, asyncio.Future[Json]] = {}
        self._up: dict[int, asyncio.Event] = {}
        self._broken: BaseException | None = None
        self._poller = asyncio.create_task(self._poll())

    @classmethod
    async def create(cls, url: str) -> JanusSession:
        """A new session on the server whose API root is `url`."""
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT))
        try:
            reply = await _post(http, url, {"janus": "create"})
        except BaseException:
            await http.close()
            raise
        return cls(http, url, int(reply["data"]["id"]))

    async def attach(self, plugin: str) -> int:
        """A handle on `plugin` in this session."""
        reply = await _post(self._http, self.url, {"janus": "attach", "plugin": plugin})
        handle = int(reply["data"]["id"])
        self._up[handle] = asyncio.Event()
        return handle

    async def connected(self, handle: int) -> None:
        """Return once Janus reports `handle`'s PeerConnection up (ICE and DTLS done)."""
        async with asyncio.timeout(NEGOTIATION_TIMEOUT):
            await self._up[handle].wait()
        if self._broken is not None:
            raise RuntimeError(f"Janus event poll failed: {self._broken!r}")

    async def message(self, handle: int, body: Json, jsep: Json | None = None) -> PluginReply:
        """Send `body` to the plugin; its synchronous reply, or the event that answers it."""
        if self._broken is not None:
            raise RuntimeError(f"Janus event poll failed: {self._broken!r}")
        transaction = secrets.token_hex(8)
        waiter = asyncio.get_running_loop().create_future()
        self._pending[transaction] = waiter  # before the POST: the event may beat the ack
        payload = {"janus": "message", "transaction": transaction, "body": body}
        if jsep is not None:
            payload["jsep"] = jsep
        try:
            reply = await _post(self._http, f"{self.url}/{handle}", payload)
            if reply["janus"] == "ack":
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    reply = _check(await waiter)
        finally:
            self._pending.pop(transaction, None)
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # mark as seen when the POST failed first
        return PluginReply(reply["plugindata"]["data"], reply.get("jsep"))

    async def _poll(self) -> None:
        """Route every event to its request or handle until the session closes or Janus fails."""
        url = f"{self.url}?maxev={POLL_MAX_EVENTS}"
        timeout = aiohttp.ClientTimeout(total=POLL_TIMEOUT)
        while True:
            try:
                async with self._http.get(url, timeout=timeout) as response:
                    body = await response.json(content_type=None)
                events: list[Json] = body if isinstance(body, list) else [body]
                for event in events:
                    self._route(event)
            except (aiohttp.ClientError, TimeoutError, ValueError, JanusError) as error:
                self._fail(error)
                return

    def _route(self, event: Json) -> None:
        """Hand one event to whoever waits for it; the rest (media, slowlink...) are only logged."""
        kind = event.get("janus")
        waiter = self._pending.get(str(event.get("transaction")))
        if kind == "webrtcup" and (up := self._up.get(int(event.get("sender", 0)))):
            up.set()
        elif waiter is not None and not waiter.done() and kind in ("event", "error"):
            waiter.set_result(event)
        elif kind == "error":
            _check(event)  # an error outside any request: the session itself is gone
        else:
            log.debug("janus %s event for handle %s", kind, event.get("sender"))

    def _fail(self, error: BaseException) -> None:
        """Wake every waiting request with the poll's failure instead of letting it time out."""
        self._broken = error
        for up in self._up.values():
            up.set()  # wakes connected(), which then raises
        for waiter in self._pending.values():
            if not waiter.done():
                waiter.set_exception(RuntimeError(f"Janus event poll failed: {error!r}"))

    async def close(self) -> None:
        """Stop polling, destroy the session (best effort), close the HTTP client."""
        self._poller.cancel()
        await asyncio.wait([self._poller])
        with contextlib.suppress(RuntimeError, aiohttp.ClientError, TimeoutError):
            await _post(self._http, self.url, {"janus": "destroy"})
        await self._http.close()


# the VideoRoom


async def create_room(url: str, room: int, bitrate: int) -> None:
    """A VP8/Opus room capped at `bitrate` bit/s: Janus' default cap (128 kbit/s) would throttle."""
    body = {
        "request": "create",
        "room": room,
        "is_private": False,
        "permanent": False,
        "publishers": PUBLISHERS,
        "bitrate": bitrate,  # sent to the publisher as REMB, which aiortc's encoder obeys
        "videocodec": "vp8",
        "audiocodec": "opus",
        # Janus' default 0: no periodic keyframes. It still asks the publisher for one when a
        # subscriber starts or sends a PLI, as our relay does, so both sides encode alike.
        "fir_freq": 0,
    }
    session = await JanusSession.create(url)
    try:
        await session.message(await session.attach(VIDEOROOM), body)
    except JanusError as error:
        if error.code != ROOM_EXISTS:  # an existing room is good enough for a fresh server
            raise
    finally:
        await session.close()


def _jsep(pc: RTCPeerConnection) -> Json:
    """Our local description as Janus' JSEP object."""
    return {"type": pc.localDescription.type, "sdp": pc.localDescription.sdp}


def _description(reply: PluginReply) -> RTCSessionDescription:
    """Janus' SDP from a reply, which must carry one with candidates: we take no trickle."""
    if reply.jsep is None:
        raise RuntimeError(f"Janus sent no SDP with {reply.data}")
    if "a=candidate:" not in reply.jsep["sdp"]:
        raise RuntimeError("Janus' SDP has no candidates: is full_trickle on?")
    return RTCSessionDescription(sdp=reply.jsep["sdp"], type=reply.jsep["type"])


class _Participant:
    """A VideoRoom handle in a session of its own, so close() tears down exactly one peer."""

    def __init__(self) -> None:
        self._session: JanusSession | None = None
        self._handle = 0
        self._joined = False

    async def _join(self, url: str, body: Json, jsep: Json | None = None) -> PluginReply:
        """Open the session and handle, then send the join request."""
        self._session = await JanusSession.create(url)
        self._handle = await self._session.attach(VIDEOROOM)
        reply = await self._session.message(self._handle, body, jsep)
        self._joined = True
        return reply

    @property
    def _open_session(self) -> JanusSession:
        """The session, once joined."""
        if self._session is None:
            raise RuntimeError("not joined")
        return self._session

    async def close(self) -> None:
        """Leave the room and destroy the session; safe to call twice."""
        session, self._session = self._session, None
        if session is None:
            return
        if self._joined:
            self._joined = False
            with contextlib.suppress(RuntimeError, aiohttp.ClientError, TimeoutError):
                await session.message(self._handle, {"request": "leave"})
        await session.close()


class JanusPublisher(_Participant):
    """The teacher: publishes a peer's sendonly audio and video into a room."""

    async def start(self, url: str, room: int, pc: RTCPeerConnection) -> int:
        """Offer, join and publish at once; the feed id that subscribers ask for."""
        body = {"request": "joinandconfigure", "ptype": "publisher", "room": room}
        try:
            async with asyncio.timeout(NEGOTIATION_TIMEOUT):
                await pc.setLocalDescription(await pc.createOffer())
                reply = await self._join(url, body, _jsep(pc))
                await pc.setRemoteDescription(_description(reply))
                # Janus refuses subscribers to a feed whose PeerConnection is not up yet
                await self._open_session.connected(self._handle)
        except BaseException:
            await self.close()
            raise
        return int(reply.data["id"])


class JanusSubscriber(_Participant):
    """A classroom: Janus offers the feed's streams, we answer and start."""

    async def start(
        self,
        url: str,
        room: int,
        feed: int,
        pc: RTCPeerConnection,
        prepare: Callable[[RTCPeerConnection], None],
    ) -> None:
        """Subscribe to `feed`; `prepare` sees the receivers before any media can flow."""
        body = {"request": "join", "ptype": "subscriber", "room": room, "streams": [{"feed": feed}]}
        try:
            async with asyncio.timeout(NEGOTIATION_TIMEOUT):
                offer = await self._join(url, body)
                await pc.setRemoteDescription(_description(offer))
                prepare(pc)
                await pc.setLocalDescription(await pc.createAnswer())
                await self._open_session.message(self._handle, {"request": "start"}, _jsep(pc))
        except BaseException:
            await self.close()
            raise
