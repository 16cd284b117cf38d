"""S3 adapter (boto3): AWS S3, MinIO, R2, Ceph or any S3-compatible service.

Upload URLs are SigV4 query-presigned and sign ``Content-Length``, ``Content-Type`` and,
when declared, ``x-amz-checksum-sha256``, so S3 itself refuses a body of another length,
type or checksum, an expired URL and any altered one. URLs are signed by the fast
presigner in ``sigv4.py`` (byte-identical to botocore's); everything else goes through one
boto3 client per process, built lazily on first use (never at import, never before fork).
Native errors are translated here and nowhere else: a missing object is ``None``, anything
that means "S3 is not answering as it should" is ``BrokerError("storage.unavailable")``.
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
from ..errors import BrokerError
from ..models import UploadInstructions
from ..naming import content_disposition
from .base import HASH_CHUNK, ObjectInfo
from .sigv4 import Credentials, Presigner

log = logging.getLogger("broker.storage.s3")

_PROBE_KEY = "broker-endpoint-probe"
_MISSING = {"404", "NoSuchKey", "NotFound"}


def _checksum_hex(value: str | None) -> str | None:
    """S3's base64 ``ChecksumSHA256`` as hex, or None when absent or malformed."""
    if not value:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None


class S3Storage:
    """Storage adapter for one S3 bucket."""

    name = "s3"
    serves_nosniff = False  # S3 keeps no such response header; see broker/downloads.py

    def __init__(self, *, bucket: str, endpoint_url: str | None, region: str, clock: Clock) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self._clock = clock
        self._lock = threading.Lock()
        self._session: boto3.session.Session | None = None
        self._client: Any = None
        self._presigner: Presigner | None = None

    # -- lazily built, once per process -------------------------------------------------------

    @property
    def client(self) -> Any:
        """The process's boto3 S3 client (thread-safe; built on first use)."""
        if self._client is None:
            self._build()
        return self._client

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

    def _signing(self) -> tuple[Presigner, Credentials, int]:
        if self._presigner is None:
            self._build()
        assert self._presigner is not None
        assert self._session is not None
        found = self._session.get_credentials()
        if found is None:
            raise BrokerError("storage.unavailable", "No AWS credentials are configured.")
        frozen = found.get_frozen_credentials()  # refreshes temporary credentials in time
        credentials = Credentials(frozen.access_key, frozen.secret_key, frozen.token)
        return self._presigner, credentials, int(self._clock())

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Translate boto3's errors into the catalogue at this boundary."""
        try:
            yield
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            log.warning("S3 %s failed: %s (%s)", action, code, status)
            raise BrokerError(
                "storage.unavailable", f"Storage refused to {action} ({code or status})."
            ) from exc
        except BotoCoreError as exc:
            log.warning("S3 %s failed: %s", action, exc)
            raise BrokerError("storage.unavailable", f"Storage did not answer ({action}).") from exc

    # -- the storage Protocol -----------------------------------------------------------------

    def presign_put(
        self, key: str, *, size: int, content_type: str, sha256: str | None, expires_at: int
    ) -> UploadInstructions:
        """A PUT URL signing the exact length, type and (declared) SHA-256 of the body."""
        presigner, credentials, now = self._signing()
        headers = {"Content-Length": str(size), "Content-Type": content_type}
        if sha256 is not None:
            headers["x-amz-checksum-sha256"] = base64.b64encode(bytes.fromhex(sha256)).decode()
        url = presigner.presign(
            "PUT", key, credentials=credentials, now=now, expires=expires_at - now,
            headers=headers,
        )  # fmt: skip
        return UploadInstructions(method="PUT", url=url, headers=headers, expires_at=expires_at)

    def presign_get(
        self, key: str, *, filename: str, content_type: str, attachment: bool, expires_at: int
    ) -> str:
        """A GET URL whose response carries the file's type and Content-Disposition."""
        presigner, credentials, now = self._signing()
        params = {
            "response-content-disposition": content_disposition(filename, attachment=attachment),
            "response-content-type": content_type,
        }
        return presigner.presign(
            "GET", key, credentials=credentials, now=now, expires=expires_at - now,
            params=params,
        )  # fmt: skip

    def head(self, key: str) -> ObjectInfo | None:
        """HEAD with checksum mode: size, type, ETag, and the SHA-256 S3 verified, if any."""
        with self._errors("read object metadata"):
            try:
                answer = self.client.head_object(
                    Bucket=self.bucket, Key=key, ChecksumMode="ENABLED"
                )
            except ClientError as exc:
                if _is_missing(exc):
                    return None
                raise
        sha256 = None
        if answer.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT":
            sha256 = _checksum_hex(answer.get("ChecksumSHA256"))
        return ObjectInfo(
            key=key,
            size=int(answer["ContentLength"]),
            content_type=answer.get("ContentType", ""),
            etag=answer.get("ETag", "").strip('"'),
            sha256=sha256,
        )

    def iter_bytes(self, key: str) -> Iterator[bytes]:
        """Stream the object in HASH_CHUNK pieces (bounded memory)."""
        with self._errors("read an object"):
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _is_missing(exc):
                    raise FileNotFoundError(key) from exc
                raise
            body = answer["Body"]
            try:
                yield from body.iter_chunks(HASH_CHUNK)
            finally:
                body.close()

    def delete(self, key: str) -> None:
        """DELETE is idempotent in S3: a missing key is not an error."""
        with self._errors("delete an object"):
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if not _is_missing(exc):
                    raise

    def ping(self) -> None:
        """HEAD the bucket."""
        with self._errors("reach the bucket"):
            self.client.head_bucket(Bucket=self.bucket)

    def _bucket_exists(self) -> bool:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _is_missing(exc):
                return False
            raise
        return True

    # -- operator tasks -----------------------------------------------------------------------

    def setup(
        self, *, create: bool, cors_origins: tuple[str, ...], abort_multipart_days: int = 1
    ) -> list[str]:
        """Create the bucket (if asked), apply CORS and the multipart lifecycle rule.

        Returns what was done, one line each, for the CLI to print.
        """
        done: list[str] = []
        with self._errors("set up the bucket"):
            if create:
                if self._bucket_exists():
                    done.append(f"bucket {self.bucket} exists")
                else:
                    params: dict[str, Any] = {"Bucket": self.bucket}
                    if self.client.meta.region_name != "us-east-1":
                        params["CreateBucketConfiguration"] = {
                            "LocationConstraint": self.client.meta.region_name
                        }
                    self.client.create_bucket(**params)
                    done.append(f"created bucket {self.bucket}")
            if cors_origins:
                self.client.put_bucket_cors(
                    Bucket=self.bucket,
                    CORSConfiguration={
                        "CORSRules": [
                            {
                                "AllowedOrigins": list(cors_origins),
                                "AllowedMethods": ["PUT", "GET", "HEAD"],
                                "AllowedHeaders": ["*"],
                                "ExposeHeaders": ["ETag", "x-amz-checksum-sha256"],
                                "MaxAgeSeconds": 600,
                            }
                        ]
                    },
                )
                done.append(f"CORS: PUT/GET/HEAD from {', '.join(cors_origins)}, ETag exposed")
            self.client.put_bucket_lifecycle_configuration(
                Bucket=self.bucket,
                LifecycleConfiguration={
                    "Rules": [
                        {
                            "ID": "broker-abort-incomplete-multipart",
                            "Status": "Enabled",
                            "Filter": {"Prefix": ""},
                            "AbortIncompleteMultipartUpload": {
                                "DaysAfterInitiation": abort_multipart_days
                            },
                        }
                    ]
                },
            )
            done.append(
                f"lifecycle: abort incomplete multipart uploads after {abort_multipart_days} day(s)"
            )
        return done


def _is_missing(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in _MISSING or status == 404
