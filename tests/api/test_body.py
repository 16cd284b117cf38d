"""``recv_body``: a gunicorn Content-Length body read in the socket's own pieces, with
gunicorn's count of the body kept right (so keep-alive finds the next request intact)."""

from __future__ import annotations

import io

from gunicorn.http.body import Body, ChunkedReader, LengthReader
from gunicorn.http.unreader import IterUnreader

from broker.api.body import RecvBody, recv_body


def _body(pieces: list[bytes], length: int) -> tuple[Body, IterUnreader]:
    unreader = IterUnreader(pieces)
    return Body(LengthReader(unreader, length)), unreader


def test_pieces_come_as_received_and_stop_at_the_body_end() -> None:
    body, unreader = _body([b"abc", b"defgh" + b"GET /next"], 8)
    reader = recv_body(body)
    assert isinstance(reader, RecvBody)
    assert [reader.read(100), reader.read(100), reader.read(100)] == [b"abc", b"defgh", b""]
    assert body.reader.length == 0  # gunicorn sees the body consumed: nothing to drain
    assert unreader.read() == b"GET /next"  # the next request is left where it was
    assert body.failed is False


def test_a_read_never_exceeds_its_size() -> None:
    body, _ = _body([b"0123456789"], 10)
    reader = recv_body(body)
    assert [reader.read(4), reader.read(4), reader.read(4), reader.read(4)] == [
        b"0123",
        b"4567",
        b"89",
        b"",
    ]


def test_a_body_cut_short_marks_the_connection_unusable() -> None:
    body, _ = _body([b"abc"], 8)
    reader = recv_body(body)
    assert reader.read(100) == b"abc"
    assert reader.read(100) == b""
    assert body.failed is True  # gunicorn then closes rather than reuse the connection


def test_other_streams_are_used_as_they_are() -> None:
    plain = io.BytesIO(b"x")
    assert recv_body(plain) is plain
    chunked = Body(ChunkedReader(None, IterUnreader([b"1\r\nx\r\n0\r\n\r\n"])))
    assert recv_body(chunked) is chunked
    started, _ = _body([b"abcdef"], 6)
    assert started.read(2) == b"ab"  # partly read through gunicorn's own buffer
    assert recv_body(started) is started
