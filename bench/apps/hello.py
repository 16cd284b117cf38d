"""The floor: a Flask hello-world with one route answering a small JSON object.

Whatever the broker does per request comes on top of what this costs: gunicorn (same
settings as the broker), Flask routing, and a JSON response. The benchmark sends it the
very same request as the broker (POST with the same headers and JSON body); the body is
left unread, as a hello-world would.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify

app = Flask(__name__)


@app.route("/", methods=["GET", "POST"])
def hello() -> Response:
    """A small JSON answer and nothing else."""
    return jsonify({"hello": "world"})
