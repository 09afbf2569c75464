"""The light classrooms' poller on real loopback sockets: one pass reads all that is queued."""

from __future__ import annotations

import socket
from typing import Any

from relay.bench.poller import BURST, Poller


def bound() -> socket.socket:
    own = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    own.bind(("127.0.0.1", 0))
    return own


async def test_one_pass_reads_every_queued_datagram_of_every_socket() -> None:
    poller = Poller(tick=3600)  # no pass of its own during the test: we call read()
    got: list[tuple[int, bytes]] = []
    sockets = [bound(), bound(), bound()]
    for index, own in enumerate(sockets):

        def handler(data: bytes, addr: Any, index: int = index) -> None:
            got.append((index, data))

        poller.add(own, handler)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for index in (0, 2):
            for n in range(5):
                sender.sendto(bytes([n]), sockets[index].getsockname())
        assert poller.read() == 10
    assert sorted(got) == [(i, bytes([n])) for i in (0, 2) for n in range(5)]
    assert poller.read() == 0
    await poller.close()
    assert all(own.fileno() == -1 for own in sockets)  # closed with the poller


async def test_a_pass_stops_at_a_burst_and_a_removed_socket_is_closed() -> None:
    poller = Poller(tick=3600)
    own = bound()
    poller.add(own, lambda _data, _addr: None)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for _ in range(BURST + 3):
            sender.sendto(b"x", own.getsockname())
        assert (poller.read(), poller.read()) == (BURST, 3)
    poller.remove(own)
    assert own.fileno() == -1
    await poller.close()


async def test_a_failing_handler_loses_its_datagram_only() -> None:
    poller = Poller(tick=3600)
    own = bound()
    got: list[bytes] = []

    def handler(data: bytes, addr: Any) -> None:
        if data == b"bad":
            raise ValueError("malformed")
        got.append(data)

    poller.add(own, handler)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for data in (b"a", b"bad", b"b"):
            sender.sendto(data, own.getsockname())
        assert poller.read() == 3
    assert got == [b"a", b"b"]
    await poller.close()
