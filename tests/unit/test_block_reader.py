"""The server's body reader: large reads go straight into their block, exactly as many
bytes as asked (never into the next request), after what is already buffered."""

from __future__ import annotations

import os
import socket
import threading

from gateway.server.http import _BlockReader


def test_a_large_read_takes_the_buffered_bytes_then_exactly_its_block() -> None:
    body = os.urandom(3 * 1024 * 1024 + 17)
    head = b"PUT /a HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body)
    after = b"GET /next HTTP/1.1\r\n"
    ours, theirs = socket.socketpair()
    # In uneven pieces, as a client's writes arrive.
    data = head + body + after
    sender = threading.Thread(
        target=lambda: [theirs.sendall(data[i : i + 70_001]) for i in range(0, len(data), 70_001)]
    )
    sender.start()
    try:
        reader = _BlockReader(ours, "rb", 8192)
        assert reader.readline() == b"PUT /a HTTP/1.1\r\n"
        assert reader.readline().startswith(b"Content-Length")
        assert reader.readline() == b"\r\n"  # the reader's buffer now holds part of the body
        blocks = [reader.read(1024 * 1024) for _ in range(3)]
        blocks.append(reader.read(len(body) - 3 * 1024 * 1024))
        assert [len(b) for b in blocks] == [1024 * 1024] * 3 + [17]
        assert b"".join(blocks) == body
        assert reader.readline() == b"GET /next HTTP/1.1\r\n"  # not read into a block
        assert reader.bytes_read == len(data)
    finally:
        sender.join()
        ours.close()
        theirs.close()


def test_a_large_read_at_the_end_of_the_stream_returns_what_came() -> None:
    ours, theirs = socket.socketpair()
    theirs.sendall(b"x" * 100_000)
    theirs.close()
    reader = _BlockReader(ours, "rb", 8192)
    assert reader.read(1024 * 1024) == b"x" * 100_000
    assert reader.read(1024 * 1024) == b""
    ours.close()
