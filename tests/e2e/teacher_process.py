"""A teacher publishing a numbered camera and a tone over WHIP, in a process (and network
namespace) of its own:

    ip netns exec NS python -m tests.e2e.teacher_process URL TOKEN

It prints `{"event": "ready"}` once published and stops on stdin EOF.
"""

from __future__ import annotations

import asyncio
import json
import sys

from tests.media import CounterVideoTrack, ToneAudioTrack
from tests.peers import whip_publish


async def main(url: str, token: str) -> None:
    base, _, room = url.rpartition("/whip/")
    publication = await whip_publish(
        base, room, token, "camera", CounterVideoTrack(), ToneAudioTrack()
    )
    print(json.dumps({"event": "ready"}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await publication.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
