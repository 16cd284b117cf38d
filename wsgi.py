"""WSGI entry point for the Procfile: ``gunicorn wsgi:app``."""

from broker import create_app

app = create_app()
