"""The fast SigV4 presigner produces botocore's URLs byte for byte (same inputs, same clock)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import random
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config

from broker.naming import InvalidKey, content_disposition, normalise_key
from broker.storage.s3 import S3Storage
from broker.storage.sigv4 import Credentials, Presigner

NOW = 1_800_000_123
ALPHABET = "abcXYZ019-_.~ !*'()+=&$@,;:?#[]%/éüßøñ☃中文Ω\u0301\U0001f600"


class Clock:
    def __call__(self) -> float:
        return NOW + 0.75  # fractions must not leak into the signature


def _random_keys(count: int, seed: int) -> Iterator[str]:
    rng = random.Random(seed)
    made = 0
    while made < count:
        key = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 40)))
        try:
            yield "tenant/bucket/" + normalise_key(key)
            made += 1
        except InvalidKey:
            continue


@pytest.fixture(params=["path-style endpoint", "aws virtual-hosted", "temporary credentials"])
def storage(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> tuple[S3Storage, Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    if request.param == "temporary credentials":
        monkeypatch.setenv("AWS_SESSION_TOKEN", "FQoGZXIvYXdzE//token+with/odd=chars")
    else:
        monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    endpoint = None if request.param == "aws virtual-hosted" else "http://127.0.0.1:9000"
    region = "eu-west-3" if endpoint is None else "us-east-1"
    monkeypatch.setattr(
        "botocore.auth.get_current_datetime",
        lambda: dt.datetime.fromtimestamp(NOW, dt.UTC).replace(tzinfo=None),
    )
    adapter = S3Storage(bucket="my-bucket", endpoint_url=endpoint, region=region, clock=Clock())
    reference = boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        config=Config(
            signature_version="s3v4", s3={"addressing_style": "path" if endpoint else "virtual"}
        ),
    )
    return adapter, reference


def test_put_urls_are_identical_to_botocore(storage: tuple[S3Storage, Any]) -> None:
    adapter, reference = storage
    rng = random.Random(7)
    for key in _random_keys(150, seed=11):
        size = rng.choice([0, 1, 5 * 1024**2, 5 * 1024**4])
        content_type = rng.choice(["text/plain", "image/svg+xml", "text/plain; charset=utf-8"])
        sha = hashlib.sha256(key.encode()).hexdigest() if rng.random() < 0.5 else None
        ttl = rng.randint(1, 7 * 24 * 3600)
        adapter.conditional_writes = rng.random() < 0.8  # BROKER_S3_CONDITIONAL_WRITES
        ours = adapter.presign_put(
            key, size=size, content_type=content_type, sha256=sha, expires_at=NOW + ttl
        )
        params = {
            "Bucket": "my-bucket",
            "Key": key,
            "ContentLength": size,
            "ContentType": content_type,
        }
        if sha is not None:
            params["ChecksumSHA256"] = base64.b64encode(bytes.fromhex(sha)).decode()
        if adapter.conditional_writes:
            params["IfNoneMatch"] = "*"
        theirs = reference.generate_presigned_url("put_object", Params=params, ExpiresIn=ttl)
        assert ours.url == theirs, key


def test_get_urls_are_identical_to_botocore(storage: tuple[S3Storage, Any]) -> None:
    adapter, reference = storage
    for index, key in enumerate(_random_keys(100, seed=23)):
        name = key.rsplit("/", 1)[-1]
        attachment = index % 2 == 0
        version_id = f"v{index}.Ab_c-~" if index % 3 == 0 else None
        ours = adapter.presign_get(
            key,
            filename=name,
            content_type="image/png",
            attachment=attachment,
            expires_at=NOW + 300,
            etag="ignored-by-s3",
            version_id=version_id,
        )
        params = {
            "Bucket": "my-bucket",
            "Key": key,
            "ResponseContentDisposition": content_disposition(name, attachment=attachment),
            "ResponseContentType": "image/png",
        }
        if version_id is not None:
            params["VersionId"] = version_id
        theirs = reference.generate_presigned_url("get_object", Params=params, ExpiresIn=300)
        assert ours == theirs, key


def test_part_urls_are_identical_to_botocore(storage: tuple[S3Storage, Any]) -> None:
    adapter, reference = storage
    rng = random.Random(5)
    for key in _random_keys(100, seed=31):
        number = rng.randint(1, 10_000)
        size = rng.choice([1, 5 * 1024**2, 5 * 1024**3])
        upload_id = "".join(rng.choice("abcXYZ019-_.~+/=") for _ in range(rng.randint(10, 90)))
        ours = adapter.presign_part(
            key, upload_id, part_number=number, size=size, expires_at=NOW + 900
        )
        theirs = reference.generate_presigned_url(
            "upload_part",
            Params={
                "Bucket": "my-bucket",
                "Key": key,
                "UploadId": upload_id,
                "PartNumber": number,
                "ContentLength": size,
            },
            ExpiresIn=900,
        )
        assert ours.url == theirs, key
        assert ours.headers == {"Content-Length": str(size)}


def test_upload_headers_are_exactly_the_signed_ones(storage: tuple[S3Storage, Any]) -> None:
    adapter, _ = storage
    sha = hashlib.sha256(b"x").hexdigest()
    upload = adapter.presign_put(
        "t/b/k", size=1, content_type="text/plain", sha256=sha, expires_at=NOW + 60
    )
    assert upload.headers == {
        "Content-Length": "1",
        "Content-Type": "text/plain",
        "x-amz-checksum-sha256": base64.b64encode(hashlib.sha256(b"x").digest()).decode(),
        "If-None-Match": "*",  # write-once: S3 refuses a second PUT, and one without it
    }
    signed = "content-length%3Bcontent-type%3Bhost%3Bif-none-match%3Bx-amz-checksum-sha256"
    assert f"X-Amz-SignedHeaders={signed}&" in upload.url
    adapter.conditional_writes = False  # BROKER_S3_CONDITIONAL_WRITES=off
    plain = adapter.presign_put(
        "t/b/k", size=1, content_type="a/b", sha256=None, expires_at=NOW + 60
    )
    assert plain.headers == {"Content-Length": "1", "Content-Type": "a/b"}
    assert "X-Amz-SignedHeaders=content-length%3Bcontent-type%3Bhost&" in plain.url
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in upload.url  # SigV4, never SigV2


def test_expiry_is_bounded() -> None:
    presigner = Presigner(origin="http://h", host="h", path_prefix="/b/", region="us-east-1")
    credentials = Credentials("a", "b")
    now = NOW
    for bad in (0, -5, 7 * 24 * 3600 + 1):
        with pytest.raises(ValueError, match="expires must be"):
            presigner.presign("GET", "k", credentials=credentials, now=now, expires=bad)
