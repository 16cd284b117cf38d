"""Request bodies read in the pieces the socket gives, not re-sliced to the size asked for.

gunicorn's ``wsgi.input`` for a body with a Content-Length (``Body`` over ``LengthReader``
over its socket reader) answers ``read(n)`` with exactly ``n`` bytes: it joins what
``recv`` returned in a buffer, slices ``n`` off, and buffers the rest again, at each of its
two layers. For a 1 GiB upload that is several copies of every byte, more CPU than hashing
it. ``RecvBody`` asks gunicorn's socket reader for the next piece itself (at most what is
left of the body, so it never reads into a pipelined request), hands it on as it is, and
keeps gunicorn's own count of the body up to date, so keep-alive and the drain after the
response work as before. Any other ``wsgi.input`` (another server, chunked framing, a body
already partly read) is used as it is.
"""

from __future__ import annotations

from typing import IO, Any

from ..storage.base import Readable

try:  # gunicorn is the deployment server, not a dependency of the code
    from gunicorn.http.body import Body, LengthReader
    from gunicorn.http.unreader import Unreader
except ImportError:  # pragma: no cover - without gunicorn there is nothing to unwrap
    Body = LengthReader = Unreader = None


class RecvBody:
    """A Content-Length body read from gunicorn's socket reader piece by piece."""

    def __init__(self, body: Any) -> None:
        self._body = body
        self._reader = body.reader
        self._unreader = body.reader.unreader

    def read(self, size: int = -1) -> bytes:
        """At most ``size`` bytes (fewer when the socket has fewer); ``b""`` at the end."""
        left: int = self._reader.length
        if left <= 0 or size == 0:
            return b""
        want = left if size < 0 else min(size, left)
        try:
            data: bytes = self._unreader.read(None, read_ahead=want)
        except Exception:
            self._body.failed = True  # where the next request starts is unknown: close
            raise
        if len(data) > want:  # buffered bytes reaching past what we may take
            self._unreader.unread(data[want:])
            data = data[:want]
        if not data:
            self._body.failed = True  # the client went away before the end of its body
        self._reader.length = left - len(data)
        return data


def recv_body(stream: IO[bytes]) -> Readable:
    """``stream`` itself, or a ``RecvBody`` over it when it is gunicorn's untouched
    Content-Length body."""
    found: Any = stream
    if (
        Body is not None
        and type(found) is Body
        and type(getattr(found, "reader", None)) is LengthReader
        and isinstance(getattr(found.reader, "unreader", None), Unreader)
        and found.buf.tell() == 0
        and hasattr(found, "failed")
    ):
        return RecvBody(found)
    return stream
