"""Reference WSGI apps the benchmark compares the broker against (served by gunicorn)."""
