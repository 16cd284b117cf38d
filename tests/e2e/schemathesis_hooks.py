"""Schemathesis hooks for ``test_schemathesis.py`` (loaded through ``SCHEMATHESIS_HOOKS``).

They make generated requests follow two documented rules a schema cannot state, without
touching what is checked: an ``Idempotency-Key`` names one request (a valid key is made
unique per request, else a reused key with another body is rightly 422
``idempotency.mismatch``), a form's ``file`` part comes last (the broker streams it), and a
form declares no ``size``/``sha256`` it cannot know to be true of its bytes.
And one keyword the generator skips (``propertyNames`` of metadata) is applied here.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import schemathesis


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    meta = case.meta
    if meta is not None and meta.generation.mode != "positive":
        return  # a schema-violating case is sent as generated
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and 1 <= len(key) <= 255:
        headers["Idempotency-Key"] = uuid.uuid4().hex
    body = case.body
    if isinstance(body, dict) and "file" in body:
        if list(body)[-1] != "file":
            body["file"] = body.pop("file")
        _honest(body)


def _honest(form: dict[str, Any]) -> None:
    """A proxied upload's ``size`` and ``sha256`` are left out: the bytes are made when the
    form is serialized, after this hook, so no value here could describe them (a lie is
    rightly 422 ``upload.size_mismatch``/``checksum_mismatch``)."""
    form.pop("size", None)
    form.pop("sha256", None)


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    """No schema-violating forms: every form value is text on the wire, so a mutation of a
    value's type (``size`` as a string) is often the same request as a valid one, and
    Schemathesis cannot tell it apart for ``multipart/form-data``."""
    meta = case.meta
    negative = meta is not None and meta.generation.mode != "positive"
    return not (negative and case.media_type == "multipart/form-data")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@schemathesis.hook
def filter_body(context: Any, body: Any) -> bool:
    """Bodies whose metadata keys break the document's ``propertyNames`` are not made:
    Schemathesis's OpenAPI 3.0 generator does not apply that keyword itself."""
    metadata = body.get("metadata") if isinstance(body, dict) else None
    if not isinstance(metadata, dict):
        return True
    return all(
        isinstance(k, str) and 1 <= len(k) <= 64 and not _CONTROL.search(k) for k in metadata
    )


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """The same limit, where ``filter_case`` does not reach (Schemathesis marks some form
    cases negative without naming a component, "positive test case"): an accepted
    "schema-violating" form is not counted. Every other failure of forms still is."""
    sent = str(response.request.headers.get("Content-Type", ""))
    return not (failure.code == "ST201" and sent.startswith("multipart/form-data"))
