"""The naive alternative: sign an S3 URL pair with boto3 on every request.

What a team without the broker would likely write first: parse the declaration, invent a
key, and call ``generate_presigned_url`` twice (an upload URL binding Content-Length and
Content-Type, and a download URL). It keeps no metadata at all, so it is a generous
comparison for the broker, which also authenticates and records every file.

The client is built once per process: gunicorn imports this module in each worker (the
broker's configuration does not preload apps). Presigning is local computation; nothing
ever contacts the endpoint (port 9 on loopback, where nothing listens).
"""

from __future__ import annotations

import uuid
from typing import Any

import boto3
from botocore.config import Config
from flask import Flask, Response, jsonify, request

BUCKET = "bench"
UPLOAD_TTL = 900
DOWNLOAD_TTL = 300

client: Any = boto3.client(
    "s3",
    endpoint_url="http://127.0.0.1:9",
    region_name="us-east-1",
    aws_access_key_id="bench",
    aws_secret_access_key="bench-secret",  # fake; nothing is ever sent
    config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
)

app = Flask(__name__)


@app.post("/v1/files")
def create() -> tuple[Response, int]:
    """Sign a PUT URL for the declared size and type, and a GET URL, for a fresh key."""
    data = request.get_json(silent=True)
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("name"), str)
        or not isinstance(data.get("size"), int)
        or not isinstance(data.get("mime_type"), str)
    ):
        return jsonify({"error": "name, size and mime_type are required"}), 422
    key = f"{uuid.uuid4().hex}/{data['name']}"
    upload_url = client.generate_presigned_url(
        "put_object",
        Params={
            "Bucket": BUCKET,
            "Key": key,
            "ContentLength": data["size"],
            "ContentType": data["mime_type"],
        },
        ExpiresIn=UPLOAD_TTL,
    )
    download_url = client.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=DOWNLOAD_TTL
    )
    body = {"key": key, "upload_url": upload_url, "download_url": download_url}
    return jsonify(body), 201


@app.get("/healthz")
def healthz() -> Response:
    """Readiness probe for the benchmark harness."""
    return jsonify({"status": "ok"})
