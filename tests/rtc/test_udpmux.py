"""The one media socket's demultiplexing, with real sockets and real aioice agents."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import aioice
import pytest
from aioice import stun

from monitoring.metrics import REGISTRY
from relay.rtc import hooks
from relay.rtc.udpmux import MuxProtocol, UdpMux


def dropped() -> float:
    value = REGISTRY.get_sample_value(
        "ketang_media_socket_dropped_datagrams_total", {"reason": "unknown peer"}
    )
    return value or 0.0


@pytest.fixture
async def mux() -> AsyncIterator[UdpMux]:
    mux = UdpMux(0)
    await mux.open()
    yield mux
    mux.close()


def agent(mux: UdpMux) -> tuple[aioice.Connection, MuxProtocol, list[tuple[bytes, object]]]:
    """An ICE agent whose one host protocol sits on the mux; its inbound datagrams listed."""
    connection = aioice.Connection(ice_controlling=False)
    protocols = mux.host_protocols(connection, 1)
    protocol = protocols[0]
    assert isinstance(protocol, MuxProtocol)
    inbound: list[tuple[bytes, object]] = []
    setattr(protocol, "datagram_received", lambda data, addr: inbound.append((data, addr)))  # noqa: B010
    return connection, protocol, inbound


def binding_request(username: str) -> bytes:
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    request.attributes["USERNAME"] = username
    return bytes(request)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.005)


async def test_a_peer_is_routed_by_its_binding_requests_username_then_by_its_address(
    mux: UdpMux,
) -> None:
    _, _, first_in = agent(mux)
    second, _, second_in = agent(mux)
    address = (mux.addresses[0], mux.port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind((mux.addresses[0], 0))
        peer.sendto(b"\x80media before any check", address)  # a stranger: dropped
        before = dropped()
        await settle()
        assert dropped() == before + 1 and not first_in and not second_in
        peer.sendto(binding_request(f"{second.local_username}:peer"), address)
        peer.sendto(b"\x80media after the check", address)
        await settle()
    assert [data for data, _ in second_in][1] == b"\x80media after the check"
    assert first_in == []


async def test_a_closed_agent_leaves_no_route_behind(mux: UdpMux) -> None:
    connection, protocol, inbound = agent(mux)
    address = (mux.addresses[0], mux.port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind((mux.addresses[0], 0))
        peer.sendto(binding_request(f"{connection.local_username}:peer"), address)
        await settle()
        assert len(inbound) == 1 and mux.connections == 1
        await protocol.close()
        assert mux.connections == 0
        before = dropped()
        peer.sendto(b"\x80late media", address)
        peer.sendto(binding_request(f"{connection.local_username}:peer"), address)
        await settle()
    assert len(inbound) == 1 and dropped() == before + 2


async def test_two_ice_agents_connect_and_exchange_data_through_the_mux(mux: UdpMux) -> None:
    """A whole ICE exchange: the answering agent's host candidate is the mux, the offering
    agent (a classroom) binds a socket of its own, as any browser does."""
    answerer = aioice.Connection(ice_controlling=False)
    hooks.gather_host_candidates_from(answerer, mux.host_protocols)
    offerer = aioice.Connection(ice_controlling=True, use_ipv6=False)
    await asyncio.gather(answerer.gather_candidates(), offerer.gather_candidates())
    assert {c.port for c in answerer.local_candidates} == {mux.port}
    for near, far in ((answerer, offerer), (offerer, answerer)):
        near.remote_username, near.remote_password = far.local_username, far.local_password
        for candidate in far.local_candidates:
            await near.add_remote_candidate(candidate)
        await near.add_remote_candidate(None)
    async with asyncio.timeout(10):
        await asyncio.gather(answerer.connect(), offerer.connect())
        await offerer.send(b"\x80from the classroom")
        assert await answerer.recv() == b"\x80from the classroom"
        await answerer.send(b"\x80from the relay")
        assert await offerer.recv() == b"\x80from the relay"
    await asyncio.gather(answerer.close(), offerer.close())
    assert mux.connections == 0
