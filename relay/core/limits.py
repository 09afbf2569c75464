"""What one session, token or page may cost, decided without I/O: the rules a leaked token
meets. The shell counts and acts (ends a session, answers 429/503, drops a message)."""

from __future__ import annotations

from dataclasses import dataclass

# Why a session was ended by the relay rather than by its peer, as metrics label it.
SETUP = "setup"  # ICE/DTLS never completed within the deadline
SILENT = "silent"  # a connected peer stopped sending anything at all


@dataclass(frozen=True, slots=True)
class Liveness:
    """One session's life as the sweep sees it."""

    created: float
    connected: bool  # the peer connection is connected now
    heard: float | None  # when the last packet of any kind came from the peer, if ever


def expired(now: float, life: Liveness, setup_seconds: float, silence_seconds: float) -> str | None:
    """Why the session should end now, or None. A session that never connected holds ICE
    sockets, tasks and metric series for nothing; a connected one whose peer sends nothing
    (not even RTCP or an ICE consent check) is a browser that was killed or unplugged, and
    aiortc would wait 30 s of failed consent checks (RFC 7675) to notice."""
    if not life.connected:
        return SETUP if now - life.created >= setup_seconds else None
    last = life.heard if life.heard is not None else life.created
    return SILENT if now - last >= silence_seconds else None


class Bucket:
    """A token bucket: `rate` events a second on average, bursts of `burst`."""

    __slots__ = ("_at", "_level", "burst", "rate")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._level = burst
        self._at: float | None = None

    def take(self, now: float) -> bool:
        """True when one more event fits now; it is then counted."""
        if self._at is not None:
            self._level = min(self.burst, self._level + (now - self._at) * self.rate)
        self._at = now
        if self._level < 1:
            return False
        self._level -= 1
        return True
