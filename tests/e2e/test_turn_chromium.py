"""Headless Chromium in a school whose firewall lets no UDP out plays the lesson from the
classroom page, through coturn on port 443: the page gets its TURN credentials from the relay
(KETANG_TURN_URLS / KETANG_TURN_SECRET) before it builds its RTCPeerConnection.

Chromium runs inside the school's namespace through a wrapper script (`ip netns exec`);
Playwright drives it over a pipe, so the namespace changes nothing for control.

Chromium verifies a TURNS server's certificate as it does a web site's: with coturn's
self-signed one it logs (--enable-logging=stderr --v=1)
    CertVerifyProcBuiltin for 198.51.100.x failed: ... ERROR: No matching issuer found
    ssl_client_socket_impl.cc: handshake failed; returned -1, SSL error code 1, net_error -202
    p2p/socket_tcp.cc: Error from connecting socket, result=-202, destroying socket
(ERR_CERT_AUTHORITY_INVALID) and never gets a relay candidate, so the TLS case passes
--ignore-certificate-errors, which the network service applies to TURN sockets too: the school
PC trusting a real CA's certificate, as SSL_CERT_FILE does for aiortc in test_turn.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests import netns
from tests.e2e import test_turn
from tests.e2e.cloud import lesson_in_vm, token
from tests.e2e.conftest import CHROMIUM, FLAGS, needs_chromium, until_true

pytestmark = needs_chromium

# coturn in the relay's VM on 443 (TCP, or TLS with a self-signed certificate), as for aiortc
transport = test_turn.transport
coturn = test_turn.coturn

ROOM = "firewalled-browser"
SCHOOL = "Hilltop School"
MEASURE_S = 3.0

# What the classroom page decodes and how it is connected, read with getStats from outside
# the page (its content security policy forbids eval, not Playwright's evaluate).
PLAYBACK = """async () => {
    const video = document.querySelector('#main');
    const out = {
        decoded: 0, shown: video.getVideoPlaybackQuality().totalVideoFrames,
        currentTime: video.currentTime, candidate: null, relayProtocol: null,
    };
    const playback = window.ketangPlayer.playback;
    if (!playback) return out;
    const report = await playback.pc.getStats();
    let pair = null;
    report.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') out.decoded += s.framesDecoded || 0;
        if (s.type === 'transport' && s.selectedCandidatePairId) {
            pair = report.get(s.selectedCandidatePairId);
        }
    });
    const local = pair && report.get(pair.localCandidateId);
    if (local) {
        out.candidate = local.candidateType;
        out.relayProtocol = local.relayProtocol || null;
    }
    return out;
}"""


@contextlib.asynccontextmanager
async def chromium_in(namespace: str, directory: Path, flags: list[str]) -> AsyncIterator[Browser]:
    """Debian's Chromium started inside `namespace`; never a downloaded one."""
    wrapper = directory / "chromium-in-namespace"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {namespace} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(wrapper), args=flags)
        try:
            yield browser
        finally:
            await browser.close()


async def playback(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate(PLAYBACK)
    return result


@pytest.mark.timeout(90)
async def test_chromium_in_a_school_without_udp_plays_through_turn_on_443(
    nat: netns.CloudNat, coturn: subprocess.Popen[bytes], tmp_path: Path, transport: str
) -> None:
    scheme = "turns" if transport == "tls" else "turn"
    turn_url = f"{scheme}:{nat.public_ip}:443?transport=tcp"
    env = {"KETANG_TURN_URLS": turn_url, "KETANG_TURN_SECRET": test_turn.TURN_SECRET}
    # the self-signed certificate stands for a real CA's (see the module's docstring)
    flags = [*FLAGS, "--ignore-certificate-errors"] if transport == "tls" else FLAGS
    nat.school_firewall()
    async with (
        lesson_in_vm(nat, tmp_path / "data", ROOM, env, ["--public-ip", nat.public_ip]) as base,
        chromium_in(nat.school, tmp_path, flags) as browser,
    ):
        page = await browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(f"{base}/class/{ROOM}?token={token(ROOM, 'classroom', SCHOOL)}")
        await page.click("#start")
        await until_true(page, f"({PLAYBACK})().then((p) => p.decoded > 30)", timeout=30)
        loop = asyncio.get_running_loop()
        first, start = await playback(page), loop.time()
        await asyncio.sleep(MEASURE_S)
        last, seconds = await playback(page), loop.time() - start
        decoded = (last["decoded"] - first["decoded"]) / seconds
        shown = (last["shown"] - first["shown"]) / seconds
        print(f"TURN/{transport}: {decoded:.1f} fps decoded, {shown:.1f} fps shown, {last}")
        assert decoded >= 25, f"{decoded:.1f} fps decoded through TURN/{transport}"
        assert shown >= 25, f"{shown:.1f} fps shown by #main through TURN/{transport}"
        assert last["currentTime"] > first["currentTime"] + MEASURE_S / 2
        assert (last["candidate"], last["relayProtocol"]) == ("relay", transport)
        assert nat.udp_dropped() > 0  # the school really tried UDP and was refused
        health = await page.evaluate("async () => (await fetch('/healthz')).json()")
        assert health["classrooms"] == 1
        assert errors == []
