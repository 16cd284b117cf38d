"""A fast AWS Signature V4 *query* presigner for S3, producing botocore's exact URLs.

botocore's ``generate_presigned_url`` costs ~0.6 ms per URL (request models, event hooks,
endpoint rules); the HMAC work itself is ~15 µs. This module does only the latter, plus a
cached signing key per day. Its output is proven byte-identical to botocore's for the same
inputs and clock (tests/storage/test_sigv4.py), so S3 accepts exactly what it would from botocore.

Reference: "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)".
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
MAX_EXPIRES = 7 * 24 * 3600  # SigV4 presigned URLs live at most a week


@dataclass(frozen=True)
class Credentials:
    """The key pair (and session token, for temporary credentials) that signs."""

    access_key: str
    secret_key: str
    token: str | None = None


_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")
_KEY_SAFE = re.compile(r"[A-Za-z0-9_.~/-]*")


def _encode(value: str) -> str:
    """RFC 3986 encoding as SigV4 wants it: only unreserved characters stay."""
    return value if _UNRESERVED.fullmatch(value) else quote(value, safe="-_.~")


def encode_key(key: str) -> str:
    """An S3 object key as botocore puts it in the URL path ('/' kept)."""
    return key if _KEY_SAFE.fullmatch(key) else quote(key, safe="/~")


@lru_cache(maxsize=4)
def _timestamp(epoch: int) -> str:
    """``YYYYMMDDTHHMMSSZ`` for a Unix second (the same second recurs under load)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(epoch))


class Presigner:
    """Signs S3 URLs for one endpoint, bucket and region.

    ``origin`` is ``scheme://host[:port]`` and ``path_prefix`` what precedes the key in the
    path (``/bucket/`` for path-style addressing, ``/`` for virtual-hosted buckets), both as
    botocore resolves them for the client, so URLs land where botocore's would.
    """

    def __init__(self, *, origin: str, host: str, path_prefix: str, region: str) -> None:
        self.origin = origin
        self.host = host
        self.path_prefix = path_prefix
        self.region = region
        self._lock = threading.Lock()
        self._key_cache: tuple[str, str, bytes] | None = None  # (date, secret, key)

    def _signing_key(self, secret: str, date: str) -> bytes:
        cached = self._key_cache
        if cached is not None and cached[0] == date and cached[1] == secret:
            return cached[2]
        k = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
        for part in (self.region, "s3", "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        with self._lock:
            self._key_cache = (date, secret, k)
        return k

    def presign(
        self,
        method: str,
        key: str,
        *,
        credentials: Credentials,
        now: int,
        expires: int,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> str:
        """A presigned URL; ``headers`` are signed (the client must send exactly them).

        ``now`` is the signing time in Unix seconds; the URL is valid until now + expires.
        """
        if not 1 <= expires <= MAX_EXPIRES:
            raise ValueError(f"expires must be 1..{MAX_EXPIRES} seconds, not {expires}")
        timestamp = _timestamp(now)
        date = timestamp[:8]
        scope = f"{date}/{self.region}/s3/aws4_request"

        signed = {name.lower(): " ".join(value.split()) for name, value in (headers or {}).items()}
        signed["host"] = self.host
        names = sorted(signed)
        signed_headers = ";".join(names)

        # Operation parameters first, then the auth parameters in botocore's order.
        pairs = [(_encode(k), _encode(v)) for k, v in (params or {}).items()]
        pairs += [
            ("X-Amz-Algorithm", ALGORITHM),
            ("X-Amz-Credential", _encode(f"{credentials.access_key}/{scope}")),
            ("X-Amz-Date", timestamp),
            ("X-Amz-Expires", str(expires)),
            ("X-Amz-SignedHeaders", signed_headers.replace(";", "%3B")),
        ]
        if credentials.token is not None:
            pairs.append(("X-Amz-Security-Token", _encode(credentials.token)))
        query = "&".join(f"{k}={v}" for k, v in pairs)
        canonical_query = "&".join(f"{k}={v}" for k, v in sorted(pairs))

        path = self.path_prefix + encode_key(key)
        canonical_request = "\n".join(
            (
                method.upper(),
                path,
                canonical_query,
                "".join(f"{name}:{signed[name]}\n" for name in names),
                signed_headers,
                UNSIGNED_PAYLOAD,
            )
        )
        string_to_sign = "\n".join(
            (ALGORITHM, timestamp, scope, hashlib.sha256(canonical_request.encode()).hexdigest())
        )
        signature = hmac.new(
            self._signing_key(credentials.secret_key, date), string_to_sign.encode(), hashlib.sha256
        ).hexdigest()
        return f"{self.origin}{path}?{query}&X-Amz-Signature={signature}"
