"""A relay on a cloud VM behind 1:1 NAT, and a classroom behind its school's NAT: with
`public_ip` set the classroom plays; without it, it cannot, which proves the setting."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay import tokens
from tests import netns
from tests.e2e.processes import ROOT, start_classroom

ROOM = "cloud"
PORT = 8080
SECRET = "cloud-test-secret-" + "x" * 32


@pytest.fixture
async def nat() -> AsyncIterator[netns.CloudNat]:
    reason = netns.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with netns.cloud_nat() as made:
        yield made
    assert netns.leftovers() == []


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


@pytest.mark.timeout(90)
@pytest.mark.parametrize("advertised", [True, False], ids=["public_ip", "without"])
async def test_a_classroom_reaches_a_relay_behind_1to1_nat_only_by_its_public_ip(
    nat: netns.CloudNat, tmp_path: Path, advertised: bool
) -> None:
    env = {**os.environ, "KETANG_SECRET": SECRET, "KETANG_RECORD": "false"}
    env["KETANG_KEEP_PRIVATE_IP"] = "true"  # the teacher publishes from inside the VM
    argv = [sys.executable, "-m", "relay", "serve", "--host", "0.0.0.0", "--port", str(PORT)]
    argv += ["--data-dir", str(tmp_path)] + (["--public-ip", nat.public_ip] if advertised else [])
    relay = subprocess.Popen(
        nat.command(nat.vm, argv), cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    teacher = classroom = None
    try:
        await reachable(nat, f"http://{nat.public_ip}:{PORT}/healthz")
        teacher_token = tokens.issue(SECRET.encode(), ROOM, "teacher", "Ms Li", 600)
        teacher = await asyncio.create_subprocess_exec(
            *nat.command(nat.vm, [sys.executable, "-m", "tests.e2e.teacher_process",
                                  f"http://127.0.0.1:{PORT}/whip/{ROOM}", teacher_token]),
            cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert teacher.stdout is not None
        assert json.loads(await asyncio.wait_for(teacher.stdout.readline(), 20))["event"] == "ready"
        token = tokens.issue(SECRET.encode(), ROOM, "classroom", "Mountain School", 600)
        url = f"http://{nat.public_ip}:{PORT}/whep/{ROOM}"
        classroom = await start_classroom(url, token, nat.command(nat.school, []))
        reader = asyncio.ensure_future(classroom.read())
        await asyncio.sleep(8)
        loop = asyncio.get_running_loop()
        now = loop.time()
        recent = [t for t, _, _ in classroom.video if now - 3 <= t <= now]
        assert classroom.ready.is_set()  # signalling went through the public address either way
        if advertised:
            assert len(recent) / 3 >= 25, f"{len(recent) / 3:.1f} fps through the NAT"
        else:
            assert classroom.video == []  # its candidates are private: nothing gets through
        reader.cancel()
    finally:
        if classroom is not None:
            await classroom.stop()
        if teacher is not None and teacher.stdin is not None:
            teacher.stdin.close()
            await asyncio.wait_for(teacher.wait(), 10)
        relay.terminate()
        relay.wait(timeout=20)
