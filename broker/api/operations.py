"""Views declared as operations: the schemas that load the request and dump the answer, the
statuses it may answer. The same declaration runs the view and documents it
(``broker/openapi.py`` reads it from the routes), so the document cannot drift. The schemas
load and dump through the functions generated from them (``broker/loading.py``,
``broker/dumping.py``): marshmallow's own results, for a fraction of the cost."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from flask import Response, jsonify, request
from marshmallow import Schema

from ..dumping import Dump, dumper
from ..loading import Load, loader
from ..models import Scope
from . import json_body, load, principal


@dataclass(frozen=True)
class Operation:
    """What a view takes and answers."""

    summary: str
    response: tuple[int, type[Schema] | None]
    """The success status and the schema that dumps what the view returns (None: the view
    returns its own ``Response``, e.g. a redirect or bytes)."""
    errors: tuple[int, ...] = ()
    """The error statuses it can answer (the envelope, with the catalogue's codes)."""
    body: type[Schema] | None = None
    """The JSON body's schema; the view gets the loaded body as ``body``."""
    optional_body: bool = False
    """Whether an empty body stands for ``{}``."""
    form: type[Schema] | None = None
    """A ``multipart/form-data`` alternative the view streams itself (``body`` is then None)."""
    query: type[Schema] | None = None
    """The query string's schema; the view gets it loaded as ``query``."""
    auth: bool = True
    """Whether a key is needed; the view gets the caller as ``who``."""
    scope: Scope | None = None
    """Checked before the body is read (403 early); the use case checks again."""
    token: bool = False
    """Whether a browser token may call it (else 403 early; the use case checks again)."""
    headers: tuple[str, ...] = ()
    """Request headers the operation reads (documented as parameters, with their schema
    from ``schemas.HEADERS``)."""
    also: tuple[tuple[int, str], ...] = ()
    """Other success statuses (e.g. 206, 304) and what they mean (documented only)."""
    head: bool = False
    """Whether HEAD is documented too (a GET answering the same headers without a body)."""
    description: str | None = None
    produces: str | None = None
    """Content type of a success answer that is not JSON (documented only)."""
    loaders: dict[str, Load] = field(default_factory=dict, compare=False)
    """``body`` and ``query``: each schema's load, generated once (``loading.loader``)."""
    dumps: list[Dump] = field(default_factory=list, compare=False)
    """The response schema's dump, generated once (``dumping.dumper``)."""

    def __post_init__(self) -> None:
        for name in ("body", "query"):
            schema = getattr(self, name)
            if schema is not None:
                self.loaders[name] = loader(schema)
        if self.response[1] is not None:
            self.dumps.append(dumper(self.response[1]))


Result = Response | Any | tuple[Any, dict[str, str]]


def operation(**declared: Any) -> Callable[[Callable[..., Any]], Callable[..., Response]]:
    """Declare a view's operation; the wrapper authenticates, loads and dumps for it."""
    op = Operation(**declared)

    def decorate(view: Callable[..., Any]) -> Callable[..., Response]:
        @functools.wraps(view)
        def run(**path: Any) -> Response:
            kwargs = dict(path)
            if op.auth:
                kwargs["who"] = principal(op.scope, token=op.token)
            if op.query is not None:
                kwargs["query"] = load(op.loaders["query"], request.args.to_dict())
            if op.body is not None:
                streamed = op.form is not None and request.mimetype == "multipart/form-data"
                kwargs["body"] = (
                    None if streamed else json_body(op.loaders["body"], optional=op.optional_body)
                )
            result: Result = view(**kwargs)
            if isinstance(result, Response):
                return result
            headers: dict[str, str] = {}
            if isinstance(result, tuple):
                result, headers = result
            response = jsonify(op.dumps[0](result))
            response.status_code = op.response[0]
            if headers:
                response.headers.update(headers)
            return response

        run.operation = op  # type: ignore[attr-defined]
        return run

    return decorate


def operation_of(view: Callable[..., Any]) -> Operation | None:
    """The operation a view was declared with, if any."""
    return cast(Operation | None, getattr(view, "operation", None))
