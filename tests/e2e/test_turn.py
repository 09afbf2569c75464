"""A school whose firewall lets no UDP out still follows the lesson, through coturn on port 443
(TURN over TCP, and over TLS) with credentials minted by the relay's own scheme."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.core.turn import turn_credentials, user_part
from relay.tls import ensure_self_signed
from tests import netns
from tests.e2e.cloud import fps_after, lesson_in_vm, token
from tests.e2e.processes import start_classroom

ROOM = "firewalled"
TURN_SECRET = "coturn-static-auth-secret-for-tests"


@pytest.fixture(params=["tcp", "tls"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def coturn(
    nat: netns.CloudNat, tmp_path: Path, transport: str
) -> Iterator[subprocess.Popen[bytes]]:
    """coturn in the relay's VM on port 443 (plain TCP, or TLS with a certificate for the
    public address), with the REST credentials the relay mints."""
    if shutil.which("turnserver") is None:
        pytest.skip("coturn is not installed (make test installs it)")
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
    env = {"KETANG_TURN_URLS": turn_url, "KETANG_TURN_SECRET": TURN_SECRET}
    nat.school_firewall()
    async with lesson_in_vm(
        nat, tmp_path / "data", ROOM, env, ["--public-ip", nat.public_ip]
    ) as base:
        name = "Hilltop School"
        username, password = turn_credentials(TURN_SECRET, user_part(name), time.time(), 600)
        servers = json.dumps([{"urls": turn_url, "username": username, "credential": password}])
        # the classroom trusts the TURN server's certificate as a school PC trusts a real CA's
        trust = ["env", f"SSL_CERT_FILE={tmp_path / 'tls' / 'cert.pem'}"]
        classroom = await start_classroom(
            f"{base}/whep/{ROOM}", token(ROOM, "classroom", name),
            nat.command(nat.school, trust), servers,
        )  # fmt: skip
        try:
            fps = await fps_after(classroom, 10)
            assert fps >= 25, f"{fps:.1f} fps through TURN/{transport}"
            assert nat.udp_dropped() > 0  # the school really tried UDP and was refused
        finally:
            await classroom.stop()
