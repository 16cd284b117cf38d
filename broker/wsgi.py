"""WSGI entry point for ``broker serve`` (gunicorn ``broker.wsgi:app``)."""

from __future__ import annotations

from . import create_app

app = create_app()
