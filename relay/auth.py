"""Who a request is: the one place a request's token is read and checked.

Pages and the event WebSocket carry their token in the query (`?token=`: a browser cannot set
headers on a page link or a WebSocket); API clients send `Authorization: Bearer`. WHIP and
WHEP take only the header, as RFC 9725 §4.5 and the WHEP draft say.
"""

from __future__ import annotations

from collections.abc import Collection

from aiohttp import web

from relay.core.errors import Forbidden, Unauthorized
from relay.tokens import Grant, read, verify


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
        """Any valid token, whatever its room and role (the shared library)."""
        return read(self._secret, request_token(request, query=True))

    def admin(self, request: web.Request) -> Grant:
        """An admin token, for all rooms or for one."""
        grant = self.anyone(request)
        if grant.role != "admin":
            raise Forbidden("an admin token is needed")
        return grant
