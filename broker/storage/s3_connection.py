"""One S3 bucket as boto3 reaches it: the lazy client, the fast presigner, and the one
place where boto3's errors become the catalogue's.

One boto3 client per process, built on first use (never at import, never before fork).
A missing object is the caller's business (``is_missing``); anything else that means
"S3 is not answering as it should" is ``StorageUnavailable``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..config import Clock
from ..errors import StorageUnavailable
from .sigv4 import Credentials, Presigner

log = logging.getLogger("broker.storage.s3")

_PROBE_KEY = "broker-endpoint-probe"
_MISSING = {"404", "NoSuchKey", "NotFound"}


class S3Connection:
    """A bucket, the process's boto3 client for it and the presigner on its endpoint."""

    def __init__(self, *, bucket: str, endpoint_url: str | None, region: str, clock: Clock) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self._clock = clock
        self._lock = threading.Lock()
        self._session: boto3.session.Session | None = None
        self._client: Any = None
        self._presigner: Presigner | None = None

    @property
    def client(self) -> Any:
        """The process's boto3 S3 client (thread-safe; built on first use)."""
        if self._client is None:
            self._build()
        return self._client

    def signing(self) -> tuple[Presigner, Credentials, int]:
        """The presigner, fresh credentials and the clock's whole seconds, to sign a URL."""
        if self._presigner is None:
            self._build()
        assert self._presigner is not None
        assert self._session is not None
        found = self._session.get_credentials()
        if found is None:
            raise StorageUnavailable("No AWS credentials are configured.", action="sign a URL")
        frozen = found.get_frozen_credentials()  # refreshes temporary credentials in time
        credentials = Credentials(frozen.access_key, frozen.secret_key, frozen.token)
        return self._presigner, credentials, int(self._clock())

    @contextmanager
    def errors(self, action: str) -> Iterator[None]:
        """Translate boto3's errors into the catalogue at this boundary."""
        try:
            yield
        except ClientError as exc:
            code = error_code(exc)
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            log.warning("S3 %s failed: %s (%s)", action, code, status)
            raise StorageUnavailable(
                f"Storage refused to {action} ({code or status}).", action=action
            ) from exc
        except BotoCoreError as exc:
            log.warning("S3 %s failed: %s", action, exc)
            raise StorageUnavailable(f"Storage did not answer ({action}).", action=action) from exc

    def _build(self) -> None:
        with self._lock:
            if self._client is not None:
                return
            session = boto3.session.Session()
            client = session.client(
                "s3",
                endpoint_url=self.endpoint_url,
                region_name=self.region,
                config=Config(
                    signature_version="s3v4",  # never SigV2: it does not sign Content-Length
                    s3={"addressing_style": "path" if self.endpoint_url else "virtual"},
                    retries={"mode": "standard", "max_attempts": 3},
                    connect_timeout=5,
                    read_timeout=60,
                ),
            )
            # Let botocore resolve the endpoint once (scheme, host, addressing style); the
            # fast presigner then builds URLs on exactly that base.
            probe = urlsplit(
                client.generate_presigned_url(
                    "get_object", Params={"Bucket": self.bucket, "Key": _PROBE_KEY}, ExpiresIn=60
                )
            )
            host = probe.netloc
            if (probe.scheme, probe.port) in (("http", 80), ("https", 443)):
                host = host.rsplit(":", 1)[0]
            self._presigner = Presigner(
                origin=f"{probe.scheme}://{probe.netloc}",
                host=host,
                path_prefix=probe.path[: -len(_PROBE_KEY)],
                region=client.meta.region_name,
            )
            self._session = session
            self._client = client


def error_code(exc: ClientError) -> str:
    """S3's error code (``NoSuchKey``, ``InvalidPart``, ...) of a boto3 error."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_missing(exc: ClientError) -> bool:
    """Whether a boto3 error says that the object (or bucket) is not there."""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return error_code(exc) in _MISSING or status == 404


def checksum_hex(value: str | None) -> str | None:
    """S3's base64 ``ChecksumSHA256`` as hex, or None when absent or malformed."""
    if not value:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None
