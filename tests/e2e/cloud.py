"""A lesson on a relay VM behind 1:1 NAT (tests/netns.py `cloud_nat`): a real `ketang serve`
in the VM's namespace, its teacher publishing from inside the VM, classrooms in the school's
namespace reaching it through the public address."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from relay import tokens
from tests import netns
from tests.e2e.processes import ROOT, ClassroomProcess

PORT = 8080
SECRET = "cloud-test-secret-" + "x" * 32


def token(room: str, role: str, name: str) -> str:
    return tokens.issue(SECRET.encode(), room, role, name, 600)


async def reachable(nat: netns.CloudNat, url: str, timeout: float = 20) -> None:
    """Wait until the school reaches `url` (through both NATs)."""
    probe = f"import urllib.request; urllib.request.urlopen({url!r}, timeout=1)"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        done = await asyncio.create_subprocess_exec(
            *nat.command(nat.school, [sys.executable, "-c", probe]),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        if await done.wait() == 0:
            return
        if loop.time() > deadline:
            raise TimeoutError(f"{url} not reachable from the school")
        await asyncio.sleep(0.3)


@asynccontextmanager
async def lesson_in_vm(
    nat: netns.CloudNat, data_dir: Path, room: str, env: Mapping[str, str], flags: list[str]
) -> AsyncIterator[str]:
    """The relay serving `room` with a teacher publishing; yields its public base URL."""
    settings = {**os.environ, "KETANG_SECRET": SECRET, "KETANG_RECORD": "false", **env}
    settings["KETANG_KEEP_PRIVATE_IP"] = "true"  # the teacher publishes from inside the VM
    argv = [sys.executable, "-m", "relay", "serve", "--host", "0.0.0.0", "--port", str(PORT)]
    relay = subprocess.Popen(
        nat.command(nat.vm, [*argv, "--data-dir", str(data_dir), *flags]), cwd=ROOT,
        env=settings, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    teacher = None
    try:
        base = f"http://{nat.public_ip}:{PORT}"
        await reachable(nat, f"{base}/healthz")
        whip = f"http://127.0.0.1:{PORT}/whip/{room}"
        publish = [sys.executable, "-m", "tests.e2e.teacher_process", whip]
        publish.append(token(room, "teacher", "Ms Li"))
        teacher = await asyncio.create_subprocess_exec(
            *nat.command(nat.vm, publish), cwd=ROOT,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert teacher.stdout is not None
        assert json.loads(await asyncio.wait_for(teacher.stdout.readline(), 20))["event"] == "ready"
        yield base
    finally:
        if teacher is not None and teacher.stdin is not None:
            teacher.stdin.close()
            await asyncio.wait_for(teacher.wait(), 10)
        relay.terminate()
        relay.wait(timeout=20)


async def fps_after(classroom: ClassroomProcess, seconds: float) -> float:
    """Frames a second the classroom decoded over the last 3 of `seconds` it plays for."""
    reader = asyncio.ensure_future(classroom.read())
    await asyncio.sleep(seconds)
    now = asyncio.get_running_loop().time()
    reader.cancel()
    return sum(1 for t, _, _ in classroom.video if now - 3 <= t <= now) / 3
