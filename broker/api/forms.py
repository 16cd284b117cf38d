"""Streaming ``multipart/form-data`` for proxied uploads, in bounded memory.

werkzeug's form parser spools a file part over 500 KB to a temporary file; a proxied upload
must not make that copy. This reads the body in ``READ_SIZE`` pieces through werkzeug's
incremental ``MultipartDecoder``: the fields before ``file`` are the declaration (small,
capped), and the ``file`` part is handed on as an iterator of chunks that reads the socket
only as storage takes them.

``file`` must be the last field, as in S3's POST policy: the declaration is complete before
the first byte of the file arrives. The iterator runs on to the closing boundary after the
file's last byte; anything there but the end of the form (another field, a cut-off body) is
an error raised from the iterator, so storage never publishes a body whose form was bad.
"""

from __future__ import annotations

from collections.abc import Iterator

from flask import Request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.sansio.multipart import (
    NEED_DATA,
    Data,
    Epilogue,
    Event,
    Field,
    File,
    MultipartDecoder,
    Preamble,
)

from ..errors import BrokerError, validation_error
from ..storage.base import Readable
from .body import recv_body

READ_SIZE = 1024 * 1024
"""Bytes read from the socket at a time (also the most the decoder buffers beyond it)."""
MAX_FIELDS_BYTES = 64 * 1024
"""The declaration's fields together (names and values) may be at most this long."""
MAX_PARTS = 32
FILE_FIELD = "file"


class FormUpload:
    """A form being received: the declaration fields, then the file part as chunks."""

    def __init__(self, stream: Readable, boundary: bytes) -> None:
        self._stream = stream
        self._decoder = MultipartDecoder(
            boundary, max_form_memory_size=READ_SIZE + MAX_FIELDS_BYTES, max_parts=MAX_PARTS
        )
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.content_type: str | None = None
        self.finished = False
        """Whether the whole body was read (up to and including the closing boundary)."""
        self._pending: list[Event] = []
        self._read_declaration()

    # -- what the view needs ------------------------------------------------------------------

    def declaration(self) -> dict[str, str]:
        """The fields, with ``name`` and ``mime_type`` defaulted from the file part."""
        declared = dict(self.fields)
        if "name" not in declared and self.filename:
            declared["name"] = self.filename
        if "mime_type" not in declared:
            declared["mime_type"] = self.content_type or "application/octet-stream"
        declared[FILE_FIELD] = ""  # present (its bytes stream after the declaration is loaded)
        return declared

    def chunks(self) -> Iterator[bytes]:
        """The file's bytes as they arrive; raises if the rest of the form is not just its end."""
        while True:
            event = self._next()
            if isinstance(event, Data):
                if event.data:
                    yield event.data
                if not event.more_data:
                    break
            else:  # pragma: no cover - the decoder yields only Data inside a part
                raise BrokerError("request.malformed", "The file part is not well formed.")
        event = self._next()
        if isinstance(event, Field | File):
            raise BrokerError(
                "request.malformed",
                f"Field {event.name!r} follows 'file'; 'file' must be the last field.",
            )
        if not isinstance(event, Epilogue):  # pragma: no cover - nothing else can follow
            raise BrokerError("request.malformed", "The form does not end after the file.")
        self.finished = True

    # -- parsing ------------------------------------------------------------------------------

    def _read_declaration(self) -> None:
        """Read fields until the ``file`` part starts (422 when the form has none)."""
        used = 0
        while True:
            event = self._next()
            if isinstance(event, Epilogue):
                self.finished = True
                raise validation_error({FILE_FIELD: "Missing data for required field."})
            if not isinstance(event, Field | File):  # pragma: no cover - only parts come here
                raise BrokerError("request.malformed", "The form is not well formed.")
            if event.name == FILE_FIELD:
                self.filename = event.filename if isinstance(event, File) else None
                self.content_type = event.headers.get("Content-Type")
                return
            value = bytearray()
            while True:
                data = self._next()
                if not isinstance(data, Data):  # pragma: no cover
                    raise BrokerError("request.malformed", "A form field is not well formed.")
                value += data.data
                used += len(data.data)
                if used + len(event.name) > MAX_FIELDS_BYTES:
                    raise BrokerError(
                        "request.too_large",
                        f"The fields before 'file' exceed {MAX_FIELDS_BYTES} bytes.",
                    )
                if not data.more_data:
                    break
            if event.name in self.fields:
                raise validation_error({event.name: "Given more than once."})
            try:
                self.fields[event.name] = value.decode("utf-8")
            except UnicodeDecodeError:
                raise validation_error({event.name: "Not valid UTF-8."}) from None

    def _next(self) -> Event:
        """The decoder's next event, reading more of the body as it needs."""
        try:
            while True:
                event = self._decoder.next_event()
                if event is NEED_DATA:
                    self._decoder.receive_data(self._read())
                elif not isinstance(event, Preamble):
                    return event
        except RequestEntityTooLarge:
            raise BrokerError(
                "request.too_large", f"The form has more than {MAX_PARTS} parts or huge headers."
            ) from None
        except ValueError as exc:
            raise BrokerError(
                "request.malformed", f"The body is not a complete form ({exc})."
            ) from None

    def _read(self) -> bytes | None:
        """The next piece of the body; None at its end."""
        try:
            data = self._stream.read(READ_SIZE)
        except Exception:  # werkzeug's ClientDisconnected, or the server's framing errors
            raise BrokerError(
                "request.malformed", "The body ended early or its framing is broken."
            ) from None
        return data or None


def read_form(request: Request) -> FormUpload:
    """Start reading a ``multipart/form-data`` body: its declaration, up to the file part."""
    boundary = request.mimetype_params.get("boundary", "")
    if not boundary or len(boundary) > 70:
        raise BrokerError(
            "request.malformed", "multipart/form-data needs a boundary of 1-70 characters."
        )
    return FormUpload(recv_body(request.stream), boundary.encode("latin-1"))
