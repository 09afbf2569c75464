"""A school whose firewall lets no UDP out still follows the lesson, through coturn on port 443
(TURN over TCP, and over TLS) with credentials minted by the relay's own scheme."""

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
from relay.tls import ensure_self_signed
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


@pytest.fixture(params=["tcp", "tls"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def coturn(
    nat: netns.CloudNat, tmp_path: Path, transport: str
) -> Iterator[subprocess.Popen[bytes]]:
    """coturn in the relay's VM on port 443 (plain TCP, or TLS with a certificate for the
    public address), with the REST credentials the relay mints."""
    if transport == "tls":
        cert, key = ensure_self_signed(tmp_path / "tls", nat.public_ip)
        ports = ["--listening-port=3478", "--tls-listening-port=443", f"--cert={cert}",
                 f"--pkey={key}", "--no-dtls"]  # fmt: skip
    else:
        ports = ["--listening-port=443", "--no-tls", "--no-dtls"]
    argv = [
        "turnserver", "-n", "--no-cli", "--fingerprint", *ports,
        f"--listening-ip={nat.vm_ip}", f"--relay-ip={nat.vm_ip}",
        "--use-auth-secret", f"--static-auth-secret={TURN_SECRET}", "--realm=ketang.test",
        f"--log-file={tmp_path / 'turn.log'}", "--simple-log", f"--pidfile={tmp_path / 'pid'}",
    ]  # fmt: skip
    process = subprocess.Popen(nat.command(nat.vm, argv), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    yield process
    process.terminate()
    process.wait(timeout=10)


@pytest.mark.timeout(90)
async def test_a_school_without_udp_plays_through_turn_on_443(
    nat: netns.CloudNat, coturn: subprocess.Popen[bytes], tmp_path: Path, transport: str
) -> None:
    scheme = "turns" if transport == "tls" else "turn"
    turn_url = f"{scheme}:{nat.public_ip}:443?transport=tcp"
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
        # the classroom trusts the TURN server's certificate as a school PC trusts a real CA's
        trust = ["env", f"SSL_CERT_FILE={tmp_path / 'tls' / 'cert.pem'}"]
        classroom = await start_classroom(url, token, nat.command(nat.school, trust), servers)
        reader = asyncio.ensure_future(classroom.read())
        await asyncio.sleep(10)
        loop = asyncio.get_running_loop()
        now = loop.time()
        recent = [t for t, _, _ in classroom.video if now - 3 <= t <= now]
        reader.cancel()
        assert len(recent) / 3 >= 25, f"{len(recent) / 3:.1f} fps through TURN/{transport}"
        assert nat.udp_dropped() > 0  # the school really tried UDP and was refused
    finally:
        if classroom is not None:
            await classroom.stop()
        if teacher is not None and teacher.stdin is not None:
            teacher.stdin.close()
            await asyncio.wait_for(teacher.wait(), 10)
        relay.terminate()
        relay.wait(timeout=20)
