"""How much does one upload+download URL pair cost to sign? Ratios within one run.

    .venv/bin/python bench/sign.py            # about 20 s

Compares, per URL pair (a PUT signing length and type, and a GET with a disposition):
  hmac      the SigV4 arithmetic alone: canonical-request hash plus one HMAC (the floor)
  broker    broker.storage.S3Storage (its fast presigner, byte-identical to botocore)
  sigv4     botocore's S3SigV4QueryAuth used directly on a prepared request
  boto3     boto3's client.generate_presigned_url, twice
Each figure is the median of several timed repeats; only ratios within a run matter.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench-secret")

import boto3
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from broker.storage.s3 import S3Storage

ENDPOINT = "http://127.0.0.1:9"  # never contacted: signing is local arithmetic
KEY = "acme/default/01jd7k2m9x/report 2026.pdf"


def per_pair(fn: Callable[[], object], *, number: int, repeat: int = 7) -> float:
    """Median microseconds per call of ``fn`` over ``repeat`` timed batches."""
    fn()
    runs = timeit.repeat(fn, number=number, repeat=repeat)
    return statistics.median(runs) / number * 1e6


def main() -> None:
    """Measure the four ways and print a table with ratios."""
    storage = S3Storage(bucket="bench", endpoint_url=ENDPOINT, region="us-east-1", clock=time.time)
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    credentials = Credentials("bench", "bench-secret")
    signing_key = b"k" * 32

    def hmac_floor() -> None:
        for _ in range(2):
            digest = hashlib.sha256(b"PUT\n/bench/" + KEY.encode() + b"\n" * 200).hexdigest()
            hmac.new(signing_key, digest.encode() * 3, hashlib.sha256).hexdigest()

    def broker_pair() -> None:
        expires = int(time.time()) + 900
        storage.presign_put(
            KEY, size=12345, content_type="application/pdf", sha256=None, expires_at=expires
        )
        storage.presign_get(
            KEY,
            filename="report 2026.pdf",
            content_type="application/pdf",
            attachment=False,
            expires_at=expires,
        )

    def sigv4_pair() -> None:
        for method, headers in (
            ("PUT", {"Content-Length": "12345", "Content-Type": "application/pdf"}),
            ("GET", {}),
        ):
            request = AWSRequest(method=method, url=f"{ENDPOINT}/bench/{KEY}", headers=headers)
            S3SigV4QueryAuth(credentials, "s3", "us-east-1", expires=900).add_auth(request)

    def boto3_pair() -> None:
        client.generate_presigned_url(
            "put_object",
            Params={
                "Bucket": "bench",
                "Key": KEY,
                "ContentLength": 12345,
                "ContentType": "application/pdf",
            },
            ExpiresIn=900,
        )
        client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": "bench",
                "Key": KEY,
                "ResponseContentDisposition": 'inline; filename="report 2026.pdf"',
            },
            ExpiresIn=900,
        )

    results = {
        "hmac (floor)": per_pair(hmac_floor, number=20000),
        "broker fast presigner": per_pair(broker_pair, number=5000),
        "botocore S3SigV4QueryAuth": per_pair(sigv4_pair, number=2000),
        "boto3 generate_presigned_url": per_pair(boto3_pair, number=1000),
    }
    floor = results["hmac (floor)"]
    boto = results["boto3 generate_presigned_url"]
    print(f"{'signing one URL pair':32s} {'µs/pair':>9s} {'x floor':>8s} {'vs boto3':>9s}")
    for name, micros in results.items():
        print(f"{name:32s} {micros:9.1f} {micros / floor:8.1f} {boto / micros:8.1f}x")


if __name__ == "__main__":
    main()
