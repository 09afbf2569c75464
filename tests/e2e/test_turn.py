"""A school whose firewall lets no UDP out still follows the lesson, through coturn over TCP
on port 443 with credentials minted by the relay's own scheme."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from relay import tokens
from relay.core.turn import turn_credentials, user_part
from tests import netns
from tests.e2e.processes import ROOT, start_classroom
from tests.e2e.test_public_ip import PORT, SECRET, reachable

ROOM = "firewalled"
TURN_SECRET = "coturn-static-auth-secret-for-tests"


@pytest.fixture
async def nat() -> AsyncIterator[netns.CloudNat]:
    reason = netns.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    if shutil.which("turnserver") is None:
        pytest.skip("coturn is not installed (make test installs it)")
    with netns.cloud_nat() as made:
        yield made
    assert netns.leftovers() == []


@pytest.fixture
def coturn(nat: netns.CloudNat, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """coturn in the relay's VM on TCP 443, with the REST credentials the relay mints."""
    argv = [
        "turnserver", "-n", "--no-cli", "--no-tls", "--no-dtls", "--fingerprint",
        f"--listening-ip={nat.vm_ip}", "--listening-port=443", f"--relay-ip={nat.vm_ip}",
        "--use-auth-secret", f"--static-auth-secret={TURN_SECRET}", "--realm=ketang.test",
        f"--log-file={tmp_path / 'turn.log'}", "--simple-log", f"--pidfile={tmp_path / 'pid'}",
    ]  # fmt: skip
    process = subprocess.Popen(nat.command(nat.vm, argv), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    yield process
    process.terminate()
    process.wait(timeout=10)


@pytest.mark.timeout(90)
async def test_a_school_without_udp_plays_through_turn_over_tcp(
    nat: netns.CloudNat, coturn: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    turn_url = f"turn:{nat.public_ip}:443?transport=tcp"
    env = {**os.environ, "KETANG_SECRET": SECRET, "KETANG_RECORD": "false"}
    env |= {"KETANG_KEEP_PRIVATE_IP": "true", "KETANG_TURN_URLS": turn_url}
    env |= {"KETANG_TURN_SECRET": TURN_SECRET}
    argv = [sys.executable, "-m", "relay", "serve", "--host", "0.0.0.0", "--port", str(PORT)]
    argv += ["--data-dir", str(tmp_path / "data"), "--public-ip", nat.public_ip]
    relay = subprocess.Popen(nat.command(nat.vm, argv), cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    nat.school_firewall()
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
        name = "Hilltop School"
        username, password = turn_credentials(TURN_SECRET, user_part(name), time.time(), 600)
        servers = json.dumps([{"urls": turn_url, "username": username, "credential": password}])
        token = tokens.issue(SECRET.encode(), ROOM, "classroom", name, 600)
        url = f"http://{nat.public_ip}:{PORT}/whep/{ROOM}"
        classroom = await start_classroom(url, token, nat.command(nat.school, []), servers)
        reader = asyncio.ensure_future(classroom.read())
        await asyncio.sleep(10)
        loop = asyncio.get_running_loop()
        now = loop.time()
        recent = [t for t, _, _ in classroom.video if now - 3 <= t <= now]
        reader.cancel()
        assert len(recent) / 3 >= 25, f"{len(recent) / 3:.1f} fps through TURN/TCP"
        assert nat.udp_dropped() > 0  # the school really tried UDP and was refused
    finally:
        if classroom is not None:
            await classroom.stop()
        if teacher is not None and teacher.stdin is not None:
            teacher.stdin.close()
            await asyncio.wait_for(teacher.wait(), 10)
        relay.terminate()
        relay.wait(timeout=20)
