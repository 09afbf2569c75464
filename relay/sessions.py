"""Who may act on a room's sessions, and how many each token may hold.

A session's resource URL (`Location`) acts only for the token that created it, or for an
admin of that room: a classroom token leaked from one school cannot end another school's
session, whatever session ids it learns. Each session also carries its ICE session's entity
tag (RFC 9725 §4.3.1) and what the liveness sweep needs.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from relay.auth import may_manage
from relay.config import LimitsConfig
from relay.core.errors import Forbidden, NotFound, Overloaded, TooManyRequests
from relay.rtc.hooks import Heard
from relay.tokens import Grant

# Seconds a client is told to wait when its token or the room is full: about how long a
# page's dead session takes to be swept (its silence limit).
RETRY_AFTER = 10
# Sessions remembered after they ended, so that a client which closes its peer connection
# before sending DELETE (most WHIP/WHEP libraries do) gets 200, not 404.
ENDED_KEPT = 1024


@dataclass(slots=True)
class Ticket:
    """One session's access record."""

    kind: str  # "whip" or "whep"
    owner: str  # the id of the token that created it (relay.tokens.token_id)
    etag: str  # the entity tag of its ICE session, quoted (RFC 9110 §8.8.3)
    created: float
    heard: Heard
    candidates_ended: bool = False  # the client trickled its end-of-candidates


class EndedSessions:
    """The latest sessions that ended, across the rooms of a process (a room may be gone by
    the time its last client's DELETE comes)."""

    def __init__(self, kept: int = ENDED_KEPT) -> None:
        self._kept = kept
        self._tickets: dict[tuple[str, str], Ticket] = {}  # oldest first

    def add(self, room: str, session_id: str, ticket: Ticket) -> None:
        self._tickets[(room, session_id)] = ticket
        while len(self._tickets) > self._kept:
            del self._tickets[next(iter(self._tickets))]

    def get(self, key: tuple[str, str]) -> Ticket | None:
        return self._tickets.get(key)


class SessionBook:
    """The access records of one room's sessions."""

    def __init__(self, room: str, limits: LimitsConfig, ended: EndedSessions) -> None:
        self.room = room
        self.limits = limits
        self._tickets: dict[str, Ticket] = {}
        self._ended = ended
        self._pending: Counter[str] = Counter()  # owner -> sessions being negotiated

    @contextmanager
    def reserve(self, owner: str) -> Iterator[None]:
        """Hold a place for a session being negotiated; 429 or 503 when there is none."""
        held = sum(1 for t in self._tickets.values() if t.owner == owner) + self._pending[owner]
        if held >= self.limits.sessions_per_token:
            limit = self.limits.sessions_per_token
            raise TooManyRequests(
                f"this token already holds {limit} sessions: end one first",
                RETRY_AFTER,
                limit="sessions_per_token",
            )
        if len(self._tickets) + self._pending.total() >= self.limits.sessions_per_room:
            raise Overloaded(
                f"room {self.room!r} is full, try again later",
                RETRY_AFTER,
                limit="sessions_per_room",
            )
        self._pending[owner] += 1
        try:
            yield
        finally:
            self._pending[owner] -= 1
            if not self._pending[owner]:
                del self._pending[owner]

    def admit(self, session_id: str, kind: str, owner: str, now: float, heard: Heard) -> Ticket:
        """Record a new session; its ICE session gets a fresh entity tag."""
        ticket = Ticket(kind, owner, f'"{secrets.token_urlsafe(9)}"', now, heard)
        self._tickets[session_id] = ticket
        return ticket

    def check(self, session_id: str, kind: str, grant: Grant, ended: bool = False) -> Ticket:
        """The session's record if this token may act on it: its creator, or an admin of
        the room; with `ended`, a session that ended lately too. Unknown sessions and
        sessions of the other kind are 404 alike."""
        ticket = self._tickets.get(session_id)
        if ticket is None and ended:
            ticket = self._ended.get((self.room, session_id))
        if ticket is None or ticket.kind != kind:
            raise NotFound(f"no {kind} session {session_id!r} in room {self.room!r}")
        if ticket.owner != grant.id and not may_manage(grant, self.room):
            raise Forbidden("this session was created with another token")
        return ticket

    def live(self, session_id: str) -> bool:
        return session_id in self._tickets

    def forget(self, session_id: str) -> None:
        """The session ended; its record is kept a while for a late DELETE."""
        ticket = self._tickets.pop(session_id, None)
        if ticket is not None:
            self._ended.add(self.room, session_id, ticket)

    def items(self) -> list[tuple[str, Ticket]]:
        return list(self._tickets.items())
