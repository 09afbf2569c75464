"""Trickled ICE candidates into a session's peer connection (RFC 9725 §4.3.1, RFC 8838).

WHIP and WHEP use max-bundle, so every candidate belongs to the one transport of the BUNDLE
group, whichever `a=mid` the client put it under: it is added to the first m-section, the
only one aiortc gives a transport of its own.
"""

from __future__ import annotations

import asyncio
import re

from aiortc import RTCPeerConnection
from aiortc.sdp import candidate_from_sdp

from relay.core.errors import BadRequest
from relay.core.sdpfrag import Fragment

# Seconds a PATCH may wait for aiortc to take its candidates (an mDNS name is resolved first).
ADD_SECONDS = 3.0
_UFRAG = re.compile(r"^a=ice-ufrag:(\S+)", re.MULTILINE)


def is_restart(pc: RTCPeerConnection, fragment: Fragment) -> bool:
    """New ICE credentials in a fragment ask for an ICE restart (RFC 8839 §4.4.1.1.1)."""
    if fragment.ufrag is None or pc.remoteDescription is None:
        return False
    current = _UFRAG.search(pc.remoteDescription.sdp)
    return current is not None and current.group(1) != fragment.ufrag


async def add(pc: RTCPeerConnection, fragment: Fragment) -> None:
    """Add the fragment's candidates, then end-of-candidates if it says so; 400 if the
    session already heard its end-of-candidates."""
    transceivers = pc.getTransceivers()
    if not transceivers or pc.remoteDescription is None:
        raise BadRequest("the session has no ICE transport")
    mid = transceivers[0].mid
    try:
        async with asyncio.timeout(ADD_SECONDS):
            for parsed in fragment.candidates:
                candidate = candidate_from_sdp(parsed.line)
                candidate.sdpMid = mid
                await pc.addIceCandidate(candidate)
            if fragment.end:
                await pc.addIceCandidate(None)
    except ValueError as error:  # aioice: a candidate after end-of-candidates
        raise BadRequest(f"candidates not added: {error}") from None
    except TimeoutError:
        raise BadRequest(f"candidates not added within {ADD_SECONDS:g} s") from None
