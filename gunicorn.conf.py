"""Loaded automatically by `gunicorn wsgi:app` (the Procfile): the broker's settings."""

from broker.gunicorn_conf import *  # noqa: F403
