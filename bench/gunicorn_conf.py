"""gunicorn configuration of ``create.py``'s servers: the served tree's broker settings, as is.

``create.py`` passes this file by path (``--config bench/gunicorn_conf.py``, the work
tree's copy for every target) with the target's tree as gunicorn's cwd, ``--chdir`` and
``PYTHONPATH``. It imports ``broker.gunicorn_conf`` just as ``--config
python:broker.gunicorn_conf`` would, so from that tree, and takes over every name it defines
(settings and hooks alike). The one addition: once a worker has loaded its app, it writes
where the code it serves came from (``__file__`` of the app's module, ``broker`` and every
``broker.*`` module) and the settings it runs with, as JSON into ``$BENCH_REPORT_DIR``. So a
baseline target is checked to serve its own tree, not the project's editable install.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import gunicorn

from broker import gunicorn_conf as _served

globals().update({k: v for k, v in vars(_served).items() if not k.startswith("__")})
_served_post_worker_init = getattr(_served, "post_worker_init", None)


def post_worker_init(worker: Any) -> None:
    """The served tree's own hook (if any), then this worker's report."""
    if _served_post_worker_init is not None:
        _served_post_worker_init(worker)
    cfg = worker.cfg
    app_uri = getattr(worker.app, "app_uri", None) or cfg.wsgi_app or ""
    app_module = app_uri.split(":")[0]
    modules = {
        name: getattr(module, "__file__", None)
        for name, module in list(sys.modules.items())
        if name in (app_module, "broker") or name.startswith("broker.")
    }
    report = {
        "pid": os.getpid(),
        "app": app_uri,
        "modules": modules,
        "settings": (
            f"gunicorn {gunicorn.__version__}, {cfg.worker_class_str} workers, "
            f"{cfg.threads} threads each, keepalive {cfg.keepalive} s, "
            f"access log {cfg.accesslog!r}, {cfg.workers} workers"
        ),
    }
    path = Path(os.environ["BENCH_REPORT_DIR"]) / f"worker-{os.getpid()}.json"
    path.with_suffix(".tmp").write_text(json.dumps(report))
    path.with_suffix(".tmp").replace(path)
