"""``broker s3 setup``: prepare an S3 bucket for the broker (an operator task, not the port)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from .s3 import S3Storage
from .s3_connection import S3Connection, is_missing
from .s3_cors import browser_headers, cors_rule


def setup(
    storage: S3Storage,
    *,
    create: bool,
    cors_origins: tuple[str, ...],
    abort_multipart_days: int = 1,
) -> list[str]:
    """Create the bucket (if asked), apply CORS and the multipart lifecycle rule.

    Returns what was done, one line each, for the CLI to print; raises StorageUnavailable.
    """
    connection = storage.connection
    client, bucket = connection.client, connection.bucket
    done: list[str] = []
    with connection.errors("set up the bucket"):
        if create:
            if _bucket_exists(connection):
                done.append(f"bucket {bucket} exists")
            else:
                params: dict[str, Any] = {"Bucket": bucket}
                if client.meta.region_name != "us-east-1":
                    params["CreateBucketConfiguration"] = {
                        "LocationConstraint": client.meta.region_name
                    }
                client.create_bucket(**params)
                done.append(f"created bucket {bucket}")
        if cors_origins:
            headers = browser_headers(storage)
            client.put_bucket_cors(
                Bucket=bucket,
                CORSConfiguration={"CORSRules": [cors_rule(cors_origins, headers)]},
            )
            done.append(
                f"CORS: PUT/GET/HEAD from {', '.join(cors_origins)} with headers "
                f"{', '.join(headers)}, ETag exposed"
            )
        client.put_bucket_lifecycle_configuration(
            Bucket=bucket,
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


def _bucket_exists(connection: S3Connection) -> bool:
    """HEAD the bucket: False when S3 says it is not there."""
    try:
        connection.client.head_bucket(Bucket=connection.bucket)
    except ClientError as exc:
        if is_missing(exc):
            return False
        raise
    return True
