"""``broker s3 setup``: prepare an S3 bucket for the broker (an operator task, not the port)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from .s3_connection import S3Connection, is_missing


def setup(
    connection: S3Connection,
    *,
    create: bool,
    cors_origins: tuple[str, ...],
    abort_multipart_days: int = 1,
) -> list[str]:
    """Create the bucket (if asked), apply CORS and the multipart lifecycle rule.

    Returns what was done, one line each, for the CLI to print; raises StorageUnavailable.
    """
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
            client.put_bucket_cors(
                Bucket=bucket,
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
