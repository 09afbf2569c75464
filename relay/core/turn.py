"""Short-lived TURN credentials in coturn's REST scheme, and the ICE servers a client gets.

coturn with `use-auth-secret` and `static-auth-secret=S` accepts any username of the form
`<expiry unix time>:<name>` whose password is base64(HMAC-SHA1(S, username))
(draft-uberti-behave-turn-rest-00 §2.2). The relay mints them per client, so a leaked one is
good for `ttl` seconds and no TURN account has to be kept anywhere. Pure: time is passed in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IceServer:
    """One ICE server as a client configures it (W3C RTCIceServer)."""

    url: str
    username: str | None = None
    credential: str | None = None


def turn_credentials(secret: str, name: str, now: float, ttl: float) -> tuple[str, str]:
    """(username, password) valid until now + ttl for the TURN server sharing `secret`."""
    username = f"{int(now + ttl)}:{name}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def user_part(name: str) -> str:
    """The name as coturn takes it after `<expiry>:` (it refuses spaces and other
    punctuation as a wrong username): letters, digits, `_.-`, for its logs only."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:32] or "client"


def ice_servers(
    stun: tuple[str, ...],
    turn: tuple[str, ...],
    secret: str | None,
    name: str,
    now: float,
    ttl: float,
) -> list[IceServer]:
    """The STUN servers as they are, and the TURN servers with credentials for `name`."""
    servers = [IceServer(url) for url in stun]
    if turn and secret is not None:
        username, password = turn_credentials(secret, user_part(name), now, ttl)
        servers += [IceServer(url, username, password) for url in turn]
    return servers
