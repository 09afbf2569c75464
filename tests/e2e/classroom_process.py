"""A classroom player in its own process (and network namespace): one JSON line per frame.

    ip netns exec NS python -m tests.e2e.classroom_process URL TOKEN [ICE_SERVERS_JSON]

It plays the room over WHEP with a real aiortc peer and prints `{"event": "ready"}` once
connected, then `{"t": <monotonic>, "kind": "video"|"audio", "w": .., "h": ..}` per decoded
frame (the monotonic clock is shared by every namespace of a host). Its video receivers use
the relay's loss-robust jitter buffer, as a browser skips to the next keyframe on a lost
packet; aiortc's own would stall for seconds and measure aiortc, not the relay. It stops on
stdin EOF or SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

from aiortc import MediaStreamTrack, RTCIceServer, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from relay.rtc import hooks
from relay.rtc.jitter import EagerJitterBuffer
from tests.peers import delete_session, new_peer_connection, post_sdp


def emit(record: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


async def drain(track: MediaStreamTrack) -> None:
    try:
        while True:
            frame = await track.recv()
            record: dict[str, object] = {"t": time.monotonic(), "kind": track.kind}
            if track.kind == "video":
                record["w"], record["h"] = frame.width, frame.height  # type: ignore[union-attr]
            emit(record)
    except MediaStreamError:
        pass


async def main(url: str, token: str, servers: str = "[]") -> None:
    """`servers`: RTCIceServer entries as JSON ({"urls", "username", "credential"})."""
    pc = new_peer_connection([RTCIceServer(**server) for server in json.loads(servers)])
    pc.addTransceiver("audio", direction="recvonly")
    video = pc.addTransceiver("video", direction="recvonly")
    original = hooks.jitter_buffer_of(video.receiver)
    hooks.release_frames_early(
        video.receiver,
        EagerJitterBuffer(capacity=original.capacity, is_video=True, clock=time.monotonic),
    )
    tasks: list[asyncio.Task[None]] = []
    pc.on("track", lambda track: tasks.append(asyncio.ensure_future(drain(track))))
    await pc.setLocalDescription(await pc.createOffer())
    reply = await post_sdp(url, token, pc.localDescription.sdp)
    if reply.status != 201 or reply.location is None:
        raise SystemExit(f"WHEP refused: {reply.status} {reply.body.strip()}")
    await pc.setRemoteDescription(RTCSessionDescription(reply.body, "answer"))
    emit({"event": "ready"})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.read(1) else None)
    await stop.wait()
    await delete_session(reply.location, token)
    await pc.close()
    for task in tasks:
        task.cancel()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
