# The broker as one image for any container platform: gunicorn on $PORT (default 8000) with
# the same settings as the Procfile (gunicorn.conf.py -> broker/gunicorn_conf.py), as a
# non-root user, dependencies from requirements.txt (pinned, PostgreSQL driver included).
#
#   docker build -t broker .
#   docker run -p 8000:8000 -e BROKER_ADMIN_KEY=... -v broker-data:/data broker
#
# With PostgreSQL (DATABASE_URL or BROKER_DATABASE_URL), run the migration once per deploy
# before the new containers serve: `docker run --rm -e DATABASE_URL=... broker broker db upgrade`
# (or set BROKER_AUTO_MIGRATE=1 and gunicorn's master migrates before it forks).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Pinned dependencies first (a layer that changes only with requirements.txt), then the
# broker itself without resolving anything again.
COPY requirements.txt ./
RUN grep -vx '\.' requirements.txt > /tmp/dependencies.txt \
    && pip install --no-deps -r /tmp/dependencies.txt \
    && rm /tmp/dependencies.txt
COPY pyproject.toml README.md ./
COPY broker ./broker
COPY wsgi.py gunicorn.conf.py ./
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin broker \
    && mkdir -p /data \
    && chown broker:broker /data

USER broker

# The embedded store and SQLite live in /data (mount a volume); the signing secret too,
# unless BROKER_SECRET_KEY is set. PORT is what platforms set; the bind is 0.0.0.0:$PORT.
ENV BROKER_DATA_DIR=/data \
    PORT=8000
EXPOSE 8000

# slim has no curl: Python asks /v1/health (200 when the database and storage answer).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v1/health' % os.environ.get('PORT', '8000'), timeout=4)"]

CMD ["gunicorn", "wsgi:app"]
