"""S3 adapter (boto3): AWS S3, MinIO, R2, Ceph or any S3-compatible service.

Upload URLs are SigV4 query-presigned and sign ``Content-Length``, ``Content-Type``,
``If-None-Match: *`` (conditional writes, unless turned off) and, when declared,
``x-amz-checksum-sha256``, so S3 itself refuses a body of another length, type or checksum,
a second write to the object (412 ``PreconditionFailed``), a PUT that drops the header
(403), an expired URL and any altered one. The broker's own writes (completing a multipart
upload, a proxied upload) are conditional too. URLs are signed by the fast
presigner in ``sigv4.py`` (byte-identical to botocore's); everything else goes through the
connection's one boto3 client (``s3_connection.py``), whose ``errors`` helper is where
boto3's errors become ``StorageUnavailable``. Bucket set-up for operators is in
``s3_setup.py``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from botocore.exceptions import ClientError

from ..config import Clock, MiB
from ..errors import BrokerError, StorageUnavailable
from ..models import StoredPart, UploadInstructions
from ..naming import content_disposition
from ..parts import MAX_PART_SIZE
from .base import HASH_CHUNK, Expected, ObjectInfo, OpenUpload, StoredObject, already_stored
from .guard import StorageGuard
from .s3_connection import S3Connection, checksum_hex, error_code, is_missing

_NO_UPLOAD = {"NoSuchUpload"}
_EXISTS = {"PreconditionFailed"}
"""S3's answer to ``If-None-Match: *`` when the key holds an object."""


class S3Storage:
    """Storage adapter for one S3 bucket."""

    name = "s3"
    serves_nosniff = False  # S3 keeps no such response header; see broker/downloads.py
    listing_page_size = 1000
    """Keys or uploads asked for per listing request (S3's own maximum)."""

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None,
        region: str,
        clock: Clock,
        timeout: float = 10.0,
        guard: StorageGuard | None = None,
        conditional_writes: bool = True,
    ) -> None:
        self.bucket = bucket
        self.conditional_writes = conditional_writes
        """Whether writes carry ``If-None-Match: *`` (``BROKER_S3_CONDITIONAL_WRITES``)."""
        self.connection = S3Connection(
            bucket=bucket,
            endpoint_url=endpoint_url,
            region=region,
            clock=clock,
            timeout=timeout,
            guard=guard,
        )

    @property
    def _if_none_match(self) -> dict[str, str]:
        """The boto3 parameter that makes a write conditional, when writes are."""
        return {"IfNoneMatch": "*"} if self.conditional_writes else {}

    @property
    def client(self) -> Any:
        """The connection's boto3 client (built on first use)."""
        return self.connection.client

    # -- Storage ----------------------------------------------------------------------------------

    def presign_put(
        self, key: str, *, size: int, content_type: str, sha256: str | None, expires_at: int
    ) -> UploadInstructions:
        """A PUT URL signing the exact length, type and (declared) SHA-256 of the body, and
        ``If-None-Match: *``, so the object is written once."""
        presigner, credentials, now = self.connection.signing()
        headers = {"Content-Length": str(size), "Content-Type": content_type}
        if sha256 is not None:
            headers["x-amz-checksum-sha256"] = base64.b64encode(bytes.fromhex(sha256)).decode()
        if self.conditional_writes:
            headers["If-None-Match"] = "*"
        url = presigner.presign(
            "PUT", key, credentials=credentials, now=now, expires=expires_at - now,
            headers=headers,
        )  # fmt: skip
        return UploadInstructions(method="PUT", url=url, headers=headers, expires_at=expires_at)

    def presign_get(
        self,
        key: str,
        *,
        filename: str,
        content_type: str,
        attachment: bool,
        expires_at: int,
        etag: str | None = None,
        version_id: str | None = None,
    ) -> str:
        """A GET URL whose response carries the file's type and Content-Disposition, of
        ``version_id`` when given (an ETag cannot be pinned in a URL a browser follows)."""
        presigner, credentials, now = self.connection.signing()
        params = {
            "response-content-disposition": content_disposition(filename, attachment=attachment),
            "response-content-type": content_type,
        }
        if version_id is not None:
            params["versionId"] = version_id
        return presigner.presign(
            "GET", key, credentials=credentials, now=now, expires=expires_at - now,
            params=params,
        )  # fmt: skip

    def head(self, key: str) -> ObjectInfo | None:
        """HEAD with checksum mode: size, type, ETag, and the SHA-256 S3 verified, if any."""
        with self.connection.errors("read object metadata"):
            try:
                answer = self.client.head_object(
                    Bucket=self.bucket, Key=key, ChecksumMode="ENABLED"
                )
            except ClientError as exc:
                if is_missing(exc):
                    return None
                raise
        sha256 = None
        if answer.get("ChecksumType", "FULL_OBJECT") == "FULL_OBJECT":
            sha256 = checksum_hex(answer.get("ChecksumSHA256"))
        version_id = answer.get("VersionId")
        return ObjectInfo(
            key=key,
            size=int(answer["ContentLength"]),
            content_type=answer.get("ContentType", ""),
            etag=answer.get("ETag", "").strip('"'),
            sha256=sha256,
            version_id=None if version_id in (None, "null") else str(version_id),
        )

    def iter_bytes(self, key: str, *, version_id: str | None = None) -> Iterator[bytes]:
        """Stream the object (``version_id``'s, when given) in HASH_CHUNK pieces (bounded
        memory).

        Each read is its own guarded call: a slow reader of the stream holds no storage
        slot between chunks."""
        with self.connection.errors("read an object"):
            try:
                version = {} if version_id is None else {"VersionId": version_id}
                answer = self.client.get_object(Bucket=self.bucket, Key=key, **version)
            except ClientError as exc:
                if is_missing(exc):
                    raise FileNotFoundError(key) from exc
                raise
        body = answer["Body"]
        try:
            chunks = body.iter_chunks(HASH_CHUNK)
            while True:
                with self.connection.errors("read an object"):
                    chunk = next(chunks, None)
                if chunk is None:
                    return
                yield chunk
        finally:
            body.close()

    def delete(self, key: str) -> None:
        """DELETE is idempotent in S3: a missing key is not an error."""
        with self.connection.errors("delete an object"):
            try:
                self.client.delete_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if not is_missing(exc):
                    raise

    def ping(self) -> None:
        """HEAD the bucket, with the health probe's shorter time-outs."""
        with self.connection.errors("reach the bucket"):
            self.connection.probe_client.head_bucket(Bucket=self.bucket)

    # -- MultipartStorage -------------------------------------------------------------------------

    def start_multipart(self, key: str, *, content_type: str) -> str:
        """CreateMultipartUpload with the object's content type (parts carry none)."""
        with self.connection.errors("start a multipart upload"):
            answer = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ContentType=content_type
            )
        return str(answer["UploadId"])

    def presign_part(
        self, key: str, upload_id: str, *, part_number: int, size: int, expires_at: int
    ) -> UploadInstructions:
        """An UploadPart URL signing the part's exact length."""
        presigner, credentials, now = self.connection.signing()
        headers = {"Content-Length": str(size)}
        url = presigner.presign(
            "PUT", key, credentials=credentials, now=now, expires=expires_at - now,
            headers=headers, params={"uploadId": upload_id, "partNumber": str(part_number)},
        )  # fmt: skip
        return UploadInstructions(method="PUT", url=url, headers=headers, expires_at=expires_at)

    def list_parts(self, key: str, upload_id: str) -> list[StoredPart] | None:
        """ListParts, every page; None when S3 says NoSuchUpload."""
        found: list[StoredPart] = []
        marker = 0
        with self.connection.errors("list the parts of an upload"):
            while True:
                try:
                    answer = self.client.list_parts(
                        Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker
                    )
                except ClientError as exc:
                    if error_code(exc) in _NO_UPLOAD or is_missing(exc):
                        return None
                    raise
                found.extend(
                    StoredPart(
                        part_number=int(part["PartNumber"]),
                        size=int(part["Size"]),
                        etag=str(part["ETag"]).strip('"'),
                    )
                    for part in answer.get("Parts", [])
                )
                if not answer.get("IsTruncated"):
                    break
                marker = int(answer["NextPartNumberMarker"])
        return sorted(found, key=lambda part: part.part_number)

    def finish_multipart(self, key: str, upload_id: str, parts: Sequence[StoredPart]) -> ObjectInfo:
        """CompleteMultipartUpload (``If-None-Match: *``) with storage's own ETags, then HEAD
        the object.

        An upload S3 no longer holds open was completed a moment ago by another request
        (or aborted): the object, when S3 holds one, is the answer. S3 refusing to write
        over an object while the upload is still open is ``upload.already_stored``."""
        closed = refused = False
        with self.connection.errors("complete a multipart upload"):
            try:
                self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={
                        "Parts": [
                            {"PartNumber": part.part_number, "ETag": f'"{part.etag}"'}
                            for part in parts
                        ]
                    },
                    **self._if_none_match,
                )
            except ClientError as exc:
                code = error_code(exc)
                if code in ("InvalidPart", "InvalidPartOrder", "EntityTooSmall"):
                    raise BrokerError(
                        "upload.part_missing", f"Storage refused the parts ({code})."
                    ) from None
                if code not in _NO_UPLOAD | _EXISTS:
                    raise
                refused = code in _EXISTS
                closed = True
        if refused and self.list_parts(key, upload_id) is not None:
            raise already_stored()  # still open: it is not our upload's object that is there
        info = self.head(key)
        if info is None:
            if closed:
                raise BrokerError("upload.not_received", "The multipart upload is not open.")
            raise StorageUnavailable(
                "The completed object is not readable.", action="complete a multipart upload"
            )
        return info

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """AbortMultipartUpload; an upload that is gone already is fine."""
        with self.connection.errors("abort a multipart upload"):
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except ClientError as exc:
                if not (error_code(exc) in _NO_UPLOAD or is_missing(exc)):
                    raise

    # -- StreamingStorage -------------------------------------------------------------------------

    stream_part_size = 8 * MiB
    """Bytes buffered per part when streaming a body in (the most held in memory at once,
    besides the part being joined). Every 1,000 parts it doubles, so 10,000 parts reach
    past S3's 5 TiB object limit while an ordinary upload keeps the small buffer."""

    def put_stream(self, key: str, chunks: Iterable[bytes], expected: Expected) -> ObjectInfo:
        """Stream ``chunks`` into S3 through a buffer of one part, hashing as they come.

        A body that fits in one part is one PutObject (with its SHA-256, which S3 checks).
        A longer one is a multipart upload whose parts are sent as the buffer fills; it is
        completed only after the size and checksum checks pass and aborted on any error, so
        nothing (and no open upload) is left behind a refused or interrupted body.
        """
        limit = expected.limit
        hasher = hashlib.sha256()
        buffer: list[bytes] = []
        buffered = received = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            for chunk in chunks:
                received += len(chunk)
                if received > limit:
                    break  # one byte too many is proof enough; stop reading
                hasher.update(chunk)
                buffer.append(chunk)
                buffered += len(chunk)
                part_size = min(MAX_PART_SIZE, self.stream_part_size << (len(parts) // 1000))
                if buffered >= part_size:
                    if upload_id is None:
                        upload_id = self.start_multipart(key, content_type=expected.content_type)
                    parts.append(self._send_part(key, upload_id, len(parts) + 1, buffer))
                    buffer, buffered = [], 0
            digest = hasher.hexdigest()
            expected.check(received, digest)
            if upload_id is None:
                with self.connection.errors("store an object"), self._write_once():
                    answer = self.client.put_object(
                        Bucket=self.bucket,
                        Key=key,
                        Body=b"".join(buffer),
                        ContentType=expected.content_type,
                        ChecksumSHA256=base64.b64encode(bytes.fromhex(digest)).decode(),
                        **self._if_none_match,
                    )
            else:
                if buffer:
                    parts.append(self._send_part(key, upload_id, len(parts) + 1, buffer))
                    buffer = []
                with self.connection.errors("complete a multipart upload"), self._write_once():
                    answer = self.client.complete_multipart_upload(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": parts},
                        **self._if_none_match,
                    )
                upload_id = None  # complete: nothing to abort any more
        except BaseException:
            if upload_id is not None:
                with contextlib.suppress(BrokerError):
                    self.abort_multipart(key, upload_id)
            raise
        version_id = answer.get("VersionId")
        return ObjectInfo(
            key=key,
            size=received,
            content_type=expected.content_type,
            etag=str(answer.get("ETag", "")).strip('"'),
            sha256=digest,
            version_id=None if version_id in (None, "null") else str(version_id),
        )

    @contextlib.contextmanager
    def _write_once(self) -> Iterator[None]:
        """S3 refusing a conditional write (an object is there): ``upload.already_stored``."""
        try:
            yield
        except ClientError as exc:
            if error_code(exc) in _EXISTS:
                raise already_stored() from None
            raise

    def _send_part(
        self, key: str, upload_id: str, number: int, buffer: list[bytes]
    ) -> dict[str, Any]:
        """UploadPart of the buffered chunks; the part as CompleteMultipartUpload lists it."""
        body = b"".join(buffer)
        buffer.clear()  # the joined copy is all that is held from here on
        with self.connection.errors("upload a part"):
            answer = self.client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            )
        # Only the ETag: the CRC botocore adds to each part checks that part in transit, and
        # the upload was opened without a checksum algorithm, so completion names none.
        return {"PartNumber": number, "ETag": answer["ETag"]}

    # -- InventoryStorage -------------------------------------------------------------------------

    def iter_uploads(self) -> Iterator[OpenUpload]:
        """ListMultipartUploads, page by page (1,000 uploads each)."""
        for upload in self._listed("list_multipart_uploads", "Uploads"):
            yield OpenUpload(
                key=upload["Key"],
                upload_id=upload["UploadId"],
                started_at=upload["Initiated"].timestamp(),
            )

    def iter_objects(self) -> Iterator[StoredObject]:
        """ListObjectsV2, page by page (1,000 keys each)."""
        for found in self._listed("list_objects_v2", "Contents"):
            yield StoredObject(
                key=found["Key"],
                size=int(found["Size"]),
                modified_at=found["LastModified"].timestamp(),
            )

    def _listed(self, operation: str, items: str) -> Iterator[dict[str, Any]]:
        """Every item of a bucket listing, through boto3's own paginator (which also stops
        at a peer that hands out the same page token twice)."""
        pages = self.client.get_paginator(operation).paginate(
            Bucket=self.bucket, PaginationConfig={"PageSize": self.listing_page_size}
        )
        with self.connection.errors(operation.replace("_", " ")):
            for page in pages:
                yield from page.get(items, [])
