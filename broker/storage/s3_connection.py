"""One S3 bucket as boto3 reaches it: the lazy client, the fast presigner, and the one
place where boto3's errors become the catalogue's.

One boto3 client per process, built on first use (never at import, never before fork),
with time-outs and attempts bounded by ``BROKER_STORAGE_TIMEOUT`` (``guard.Timeouts``), and
a second one with shorter ones for the health probe. Every call runs in ``errors``, inside
the process's ``StorageGuard`` (bulkhead and circuit breaker). A missing object is the
caller's business (``is_missing``); anything else that means "S3 is not answering as it
should" is ``StorageUnavailable``.
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
from .guard import StorageGuard, Timeouts
from .sigv4 import Credentials, Presigner

log = logging.getLogger("broker.storage.s3")

_PROBE_KEY = "broker-endpoint-probe"
_MISSING = {"404", "NoSuchKey", "NotFound"}


class S3Connection:
    """A bucket, the process's boto3 client for it and the presigner on its endpoint."""

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None,
        region: str,
        clock: Clock,
        timeout: float = 10.0,
        guard: StorageGuard | None = None,
    ) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self.timeouts = Timeouts.within(timeout)
        self.probe_timeouts = Timeouts.probe(timeout)
        self.guard = guard or StorageGuard(limit=6, threshold=5, cool_down=5.0)
        self._clock = clock
        self._lock = threading.Lock()
        self._session: boto3.session.Session | None = None
        self._client: Any = None
        self._probe_client: Any = None
        self._presigner: Presigner | None = None

    @property
    def client(self) -> Any:
        """The process's boto3 S3 client (thread-safe; built on first use)."""
        if self._client is None:
            self._build()
        return self._client

    @property
    def probe_client(self) -> Any:
        """A client with the health probe's shorter time-outs and a single attempt."""
        if self._probe_client is None:
            self._build()
        return self._probe_client

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
        """Run one storage call inside the guard (503 at once while storage is known down
        or too many calls wait for it), and translate boto3's errors into the catalogue.

        No answer (a time-out, a refused or reset connection) and 5xx answers count as
        storage failing, for the circuit breaker; any other answer counts as storage up.
        """
        with self.guard.call(action) as failed:
            try:
                yield
            except ClientError as exc:
                code = error_code(exc)
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                log.warning("S3 %s failed: %s (%s)", action, code, status)
                if not 0 < status < 500:
                    failed()
                raise StorageUnavailable(
                    f"Storage refused to {action} ({code or status}).", action=action
                ) from exc
            except BotoCoreError as exc:
                log.warning("S3 %s failed: %s", action, exc)
                failed()
                raise StorageUnavailable(
                    f"Storage did not answer ({action}).", action=action
                ) from exc

    def _build(self) -> None:
        with self._lock:
            if self._client is not None:
                return
            session = boto3.session.Session()
            client = self._new_client(session, self.timeouts)
            self._probe_client = self._new_client(session, self.probe_timeouts)
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

    def _new_client(self, session: boto3.session.Session, timeouts: Timeouts) -> Any:
        """A boto3 S3 client on this endpoint with these time-outs and attempts."""
        return session.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            config=Config(
                signature_version="s3v4",  # never SigV2: it does not sign Content-Length
                s3={"addressing_style": "path" if self.endpoint_url else "virtual"},
                retries={"mode": "standard", "total_max_attempts": timeouts.attempts},
                connect_timeout=timeouts.connect,
                read_timeout=timeouts.read,
            ),
        )


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
