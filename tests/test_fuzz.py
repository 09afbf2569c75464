"""A seeded fuzz of WHIP and WHEP: mutated real offers never get a 5xx, every refusal is one
line, and the relay holds no more peers, sockets, tasks or fds afterwards than before.

KETANG_FUZZ_CASES (default 300) and KETANG_FUZZ_SEED pick how many cases and which; case N of
a seed is always the same mutation of the same offer (tests/fuzz.py).
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urljoin

import aiohttp
import pytest

from tests.conftest import RelayUnderTest, settled
from tests.fuzz import (
    Case,
    ErrorLog,
    Resources,
    Seed,
    cause,
    histogram,
    make_case,
    measure,
    open_peers,
    task_names,
    trickle_fragment,
)
from tests.media import CounterVideoTrack, ToneAudioTrack
from tests.peers import local_offer, new_peer_connection, whep_play, whip_publish

CASES = int(os.environ.get("KETANG_FUZZ_CASES", "300"))
SEED = os.environ.get("KETANG_FUZZ_SEED", "ketang-fuzz-1")
# Cases in flight at once; each has its own room, so they cannot disturb each other.
WORKERS = 4
# An accepted offer takes ~50 ms on loopback: an answer this late is a hang.
HTTP_TIMEOUT = 5.0
# Closed peers finish closing a few loop turns later, lessons after the reconnect grace, and
# aiohttp lingers up to 10 s (its lingering_time) on a connection whose body a 413 left unread.
SETTLE_SECONDS = 12.0
# The warm-up lesson has media, and its recording is remuxed into the library first.
WARM_UP_SECONDS = 20.0
SHOWN = 8  # causes whose first failure is listed in full
SDP = "application/sdp"
FRAGMENT = "application/trickle-ice-sdpfrag"


@pytest.fixture
def relay_env() -> dict[str, str]:
    # A lesson of an accepted WHIP case ends 0.5 s after its DELETE instead of 30 s, so its
    # writer thread is gone before the leak count. The setup deadline, which ends a session
    # that never connects (none here does), moves out of the run: a session that DELETE
    # failed to free must still be there to be counted.
    return {"KETANG_RECONNECT_GRACE": "0.5", "KETANG_SETUP_SECONDS": "600"}


async def real_offer(kinds: list[str], direction: str) -> str:
    """An offer of a real aiortc peer, candidates gathered, the peer closed again."""
    pc = new_peer_connection()
    for kind in kinds:
        pc.addTransceiver(kind, direction=direction)
    try:
        return await local_offer(pc)
    finally:
        await pc.close()


@pytest.fixture(scope="session")
def seeds() -> list[Seed]:
    """A teacher's audio+video WHIP offer and classrooms' WHEP offers with one or two videos."""

    async def build() -> list[Seed]:
        return [
            Seed("whip-av", "whip", await real_offer(["audio", "video"], "sendonly")),
            Seed("whep-av", "whep", await real_offer(["audio", "video"], "recvonly")),
            Seed("whep-avv", "whep", await real_offer(["audio", "video", "video"], "recvonly")),
        ]

    return asyncio.run(build())


@dataclass(frozen=True, slots=True)
class Reply:
    method: str
    status: int  # 0: no answer (a timeout after HTTP_TIMEOUT, or the connection failed)
    text: str
    location: str | None


@dataclass(frozen=True, slots=True)
class Failure:
    """A 5xx or no answer, with what the relay logged about it."""

    case: Case
    reply: Reply
    cause: str  # exception type, where it was raised, the last relay frame it passed
    sample: str  # the exception's message

    def describe(self) -> str:
        return (
            f"{self.case.describe()}\n  {self.reply.method} -> {self.reply.status} "
            f"{self.reply.text.strip()[:100]!r}\n  cause: {self.cause}\n  {self.sample}\n"
            f"  body against the seed:\n{self.case.diff()}"
        )


def one_line(text: str) -> bool:
    """A refusal a client can show: some text, no traceback, at most a trailing newline."""
    line = text.removesuffix("\n")
    return bool(line.strip()) and "\n" not in line and "Traceback" not in line


@dataclass
class Fuzzer:
    """Sends each case to the relay and keeps what came back."""

    http: aiohttp.ClientSession
    relay: RelayUnderTest
    log: ErrorLog
    statuses: Counter[str] = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)
    multiline: list[tuple[Case, Reply]] = field(default_factory=list)
    vanished: list[int] = field(default_factory=list)  # cases whose session was gone at DELETE

    async def send(
        self,
        method: str,
        url: str,
        token: str,
        body: bytes | None = None,
        kind: str = SDP,
        label: str = "",
    ) -> Reply:
        """One request; the reply is counted under `label` (default: the method)."""
        headers = {"Authorization": f"Bearer {token}", "Content-Type": kind}
        # a file object: aiohttp warns about raw bytes over 1 MiB, and some bodies are 2 MiB
        data = None if body is None else io.BytesIO(body)
        try:
            async with self.http.request(method, url, data=data, headers=headers) as response:
                text = (await response.read()).decode("utf-8", "replace")
                location = response.headers.get("Location")
                where = location and urljoin(url, location)
                return Reply(label or method, response.status, text, where)
        except (TimeoutError, aiohttp.ClientError) as error:  # no answer: counted as a 5xx
            return Reply(label or method, 0, repr(error), None)

    async def run(self, case: Case) -> None:
        """POST the case's body; on a 201, try its follow-ups on the Location."""
        whip = case.seed.endpoint == "whip"
        token = self.relay.token(case.room, "teacher" if whip else "classroom", case.room)
        path = f"/whip/{case.room}?source=camera" if whip else f"/whep/{case.room}"
        reply = await self.send("POST", self.relay.base + path, token, case.body)
        self.check(case, reply)
        if reply.status != 201:
            return
        if reply.location is None:
            self.failures.append(Failure(case, reply, "201 without a Location", ""))
            return
        self._own(case, reply.location)
        await self._follow_up(case, reply.location, token)

    def _own(self, case: Case, location: str) -> None:
        """Tell the log which relay objects are this case's session's."""
        runtime = self.relay.registry.find(case.room)
        session_id = location.rsplit("/", 1)[-1]
        if runtime is not None:
            sessions = {**runtime.publishers, **runtime.players}
            if session_id in sessions:
                self.log.own(case.index, session_id, sessions[session_id].pc)

    async def _follow_up(self, case: Case, location: str, token: str) -> None:
        """The case's PATCHes and DELETEs, each counted apart once the session was ended."""
        ended = ""
        for step in case.follow_up:
            if step == "delete":
                reply = await self.send("DELETE", location, token, label=f"DELETE{ended}")
                if reply.status == 404 and not ended:
                    self.vanished.append(case.index)
                ended = " after DELETE"
            else:
                fragment = trickle_fragment(step.removeprefix("patch:"), case.seed)
                label = f"PATCH{ended}"
                reply = await self.send("PATCH", location, token, fragment, FRAGMENT, label)
            self.check(case, reply)

    def check(self, case: Case, reply: Reply) -> None:
        self.statuses[f"{reply.method} {reply.status or 'no answer'}"] += 1
        logged = self.log.take(f"/{case.room}")
        if reply.status >= 500 or reply.status == 0:
            key, sample = cause(logged[0]) if logged else (self._unlogged(reply), "")
            self.failures.append(Failure(case, reply, key, sample))
        elif reply.status >= 400 and not one_line(reply.text):
            self.multiline.append((case, reply))

    @staticmethod
    def _unlogged(reply: Reply) -> str:
        if reply.status == 0:
            return f"no answer to {reply.method} in {HTTP_TIMEOUT:.0f} s: {reply.text[:80]}"
        return f"{reply.status} {reply.text.strip()[:80]!r} and nothing logged"

    async def run_all(self, cases: Iterable[Case]) -> None:
        queue: Iterator[Case] = iter(cases)

        async def worker() -> None:
            for case in queue:
                await self.run(case)

        await asyncio.gather(*(worker() for _ in range(WORKERS)))


def failure_report(failures: list[Failure]) -> str:
    """How many per cause, most frequent first, each with its first case in full."""
    by_cause = Counter(f.cause for f in failures)
    first = {f.cause: f for f in reversed(failures)}
    lines = [f"{len(failures)} request(s) answered 5xx or not at all; by cause:"]
    lines += [f"  {n:>5}x {key}" for key, n in by_cause.most_common()]
    for key, _ in by_cause.most_common(SHOWN):
        lines.append(f"first of {key}:\n{first[key].describe()}")
    return "\n".join(lines)


def background_report(log: ErrorLog) -> str:
    """Errors logged by no request (tasks, callbacks), with the cases whose sessions they
    were about when that is known."""
    causes: dict[str, list[int | None]] = {}
    for record in log.records:
        causes.setdefault(cause(record)[0], []).append(log.owner(record))
    lines = [
        f"  {len(cases):>5}x {key}\n         in cases {sorted(set(cases), key=str)[:12]}"
        for key, cases in sorted(causes.items(), key=lambda kv: -len(kv[1]))
    ]
    return "\n".join(lines) or "  none"


def quiet(relay: RelayUnderTest) -> bool:
    """No room left, no lesson being recorded or published."""
    recorder = relay.recorder
    return not list(relay.registry) and not recorder.active and not recorder.publishing


async def warm_up(relay: RelayUnderTest) -> None:
    """One good lesson with media both ways, so lazily made things exist before the baseline."""
    room = "fuzz-warm-up"
    teacher, classroom = relay.token(room, "teacher"), relay.token(room, "classroom")
    video, audio = CounterVideoTrack(), ToneAudioTrack()
    publication = await whip_publish(relay.base, room, teacher, "camera", video, audio)
    try:
        playback = await whep_play(relay.base, room, classroom)
        try:
            await playback.wait_frames(0, 1)
        finally:
            await playback.close()
    finally:
        await publication.close()


async def baseline_after_warm_up(relay: RelayUnderTest) -> Resources:
    await warm_up(relay)
    assert await settled(lambda: quiet(relay), WARM_UP_SECONDS), "the warm-up lesson never ended"
    return measure(relay.registry)


async def settle_back(relay: RelayUnderTest, baseline: Resources) -> Resources:
    """The counters once they are back at the baseline, or as they are after SETTLE_SECONDS."""
    await settled(
        lambda: quiet(relay) and not measure(relay.registry).excess(baseline), SETTLE_SECONDS
    )
    return measure(relay.registry)


@pytest.mark.timeout(60 + CASES // 20)
async def test_mutated_offers_never_get_5xx_and_leave_the_relay_as_it_was(
    relay: RelayUnderTest, seeds: list[Seed]
) -> None:
    baseline = await baseline_after_warm_up(relay)
    baseline_tasks = task_names()
    started = time.monotonic()
    connector = aiohttp.TCPConnector(force_close=True)  # no idle connections in the fd count
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
    with ErrorLog() as log:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
            fuzzer = Fuzzer(http, relay, log)
            await fuzzer.run_all(make_case(SEED, i, seeds) for i in range(CASES))
        ran = time.monotonic() - started
        after = await settle_back(relay, baseline)
    print(
        f"\nfuzz: {CASES} cases, seed {SEED!r}, {ran:.1f} s ({CASES / ran:.0f}/s), "
        f"settled {time.monotonic() - started - ran:.1f} s later"
        f"\nstatuses: {histogram(fuzzer.statuses)}"
        f"\n4xx bodies that are not one line: {len(fuzzer.multiline)}"
        f"\nsessions gone before their DELETE: cases {fuzzer.vanished}"
        f"\nerrors logged outside any case's request:\n{background_report(log)}"
        f"\nrooms left: {len(list(relay.registry))}\nresources:\n{after.table(baseline)}"
        f"\ntasks over baseline: {histogram(task_names() - baseline_tasks) or 'none'}"
        f"\npeer connections not closed (connection/signalling state): "
        f"{histogram(open_peers()) or 'none'}"
    )
    assert not fuzzer.failures, failure_report(fuzzer.failures)
    assert not fuzzer.multiline, [(c.describe(), r) for c, r in fuzzer.multiline[:SHOWN]]
    assert not after.excess(baseline), f"leaked (baseline, after): {after.excess(baseline)}"
