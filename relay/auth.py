"""Who a request is: the one place a request's token is read and checked.

Pages and the event WebSocket carry their token in the query (`?token=`: a browser cannot set
headers on a page link or a WebSocket); API clients send `Authorization: Bearer`. WHIP and
WHEP take only the header, as RFC 9725 §4.5 and the WHEP draft say.
"""

from __future__ import annotations

from collections.abc import Collection

from aiohttp import web

from relay.core.errors import Forbidden, Unauthorized
from relay.tokens import ALL_ROOMS, Grant, read, verify

# Roles people hold; `node` is a relay's own (pulling a room's media from another node).
PEOPLE = frozenset({"teacher", "classroom", "admin"})


def request_token(request: web.Request, query: bool) -> str:
    """The token of a request: `?token=` (when `query`), else `Authorization: Bearer …`."""
    token = request.query.get("token", "") if query else ""
    if not token:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else ""
    if not token:
        where = "?token= or Authorization: Bearer" if query else "Authorization: Bearer"
        raise Unauthorized(f"missing token: send {where} <token>")
    return token


class Auth:
    """Checks requests against the signing secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def room(
        self, request: web.Request, room: str, roles: Collection[str], query: bool = True
    ) -> Grant:
        """A token valid for this room in one of these roles."""
        return verify(self._secret, request_token(request, query), room, roles)

    def anyone(self, request: web.Request) -> Grant:
        """Any person's valid token, whatever its room (the shared library); a node token is
        a relay's, good for pulling media only."""
        grant = read(self._secret, request_token(request, query=True))
        if grant.role not in PEOPLE:
            raise Forbidden(f"a {grant.role} token does not open this")
        return grant

    def admin(self, request: web.Request) -> Grant:
        """An admin token, for all rooms or for one."""
        grant = self.anyone(request)
        if grant.role != "admin":
            raise Forbidden("an admin token is needed")
        return grant


def may_manage(grant: Grant, room: str) -> bool:
    """An admin token for this room, or for every room."""
    return grant.role == "admin" and grant.room in (ALL_ROOMS, room)
