"""The master's small socket servers (master/endpoint.py) on a real selector."""

from __future__ import annotations

import selectors
import socket
from collections.abc import Iterator

import pytest

from preforkd.master.endpoint import (
    MAX_CLIENTS,
    Endpoint,
    split_http_heads,
    split_lines,
)
from preforkd.master.signals import Command


@pytest.fixture
def served() -> Iterator[tuple[Endpoint, selectors.BaseSelector, set[int]]]:
    listener = socket.socket(socket.AF_INET)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    selector = selectors.DefaultSelector()
    private: set[int] = set()
    endpoint = Endpoint("control", listener, split_lines)
    endpoint.attach(selector, private)
    yield endpoint, selector, private
    endpoint.close()
    selector.close()


def turn(selector: selectors.BaseSelector, timeout: float = 5.0) -> list[Command]:
    """One turn of a master loop: what the ready callbacks returned."""
    commands = []
    for key, _ in selector.select(timeout):
        commands += key.data()
    return commands


def connect(endpoint: Endpoint) -> socket.socket:
    client = socket.create_connection(endpoint.sock.getsockname(), timeout=5)
    return client


def test_requests_become_commands_and_replies_go_back(
    served: tuple[Endpoint, selectors.BaseSelector, set[int]],
) -> None:
    endpoint, selector, private = served
    client = connect(endpoint)
    assert turn(selector) == []  # accepted
    assert len(private) == 2  # the listener and the client: closed in forked workers
    client.sendall(b'{"command": "a"}\n{"comm')
    (first,) = turn(selector)
    assert first.name == "control" and first.detail == '{"command": "a"}'
    client.sendall(b'and": "b"}\n')
    (second,) = turn(selector)
    assert second.detail == '{"command": "b"}' and second.pid == first.pid
    endpoint.reply(first.pid, b"x" * 5_000_000)  # more than a socket buffer takes at once
    received = b""
    while len(received) < 5_000_000:
        turn(selector, 0)
        received += client.recv(1 << 20)
    assert received == b"x" * 5_000_000
    client.close()
    assert turn(selector) == []
    assert len(private) == 1  # the client's descriptor is gone


def test_reply_and_close(served: tuple[Endpoint, selectors.BaseSelector, set[int]]) -> None:
    endpoint, selector, _ = served
    client = connect(endpoint)
    turn(selector)
    client.sendall(b"x\n")
    (command,) = turn(selector)
    endpoint.reply(command.pid, b"bye", close=True)
    assert client.recv(100) == b"bye"
    assert client.recv(100) == b""
    endpoint.reply(command.pid, b"nobody hears this")  # a client gone: nothing happens


def test_too_many_clients_drops_the_oldest(
    served: tuple[Endpoint, selectors.BaseSelector, set[int]],
) -> None:
    endpoint, selector, _ = served
    clients = [connect(endpoint) for _ in range(MAX_CLIENTS + 1)]
    for _ in range(100):  # turns until all are accepted (bounded; each waits for input)
        if endpoint._next_ident > MAX_CLIENTS + 1:
            break
        turn(selector, 0.5)
    assert len(endpoint._clients) == MAX_CLIENTS
    assert clients[0].recv(1) == b""  # the oldest was closed
    for client in clients:
        client.close()


def test_framers() -> None:
    assert split_lines(b"a\n\n b \nrest") == (["a", "b"], b"rest")
    heads, rest = split_http_heads(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nHost")
    assert heads == ["GET /a HTTP/1.1"] and rest == b"GET /b HTTP/1.1\r\nHost"
