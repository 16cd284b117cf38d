"""``/demo`` (only with ``BROKER_DEMO=1``): a page that uploads with ``broker.js``, and the
server-side route that hands it a browser token, as an application's backend would.

Development only: the token route asks nothing of its caller, and mints with
``BROKER_ADMIN_KEY`` (tenant ``default``). The page never sees a key.
"""

from __future__ import annotations

from flask import Blueprint, Response

from ..schemas import TokenSchema
from ..uploads.tokens import MintedToken
from . import service
from .operations import operation
from .static import asset

bp = Blueprint("demo", __name__)

TOKEN_TTL = 600


@bp.get("/demo")
@operation(summary="The demo page (BROKER_DEMO=1)", response=(200, None), auth=False,
           produces="text/html")  # fmt: skip
def page() -> Response:
    """Pick or drop files; a progress bar each; the uploaded files with download links."""
    data, _ = asset("demo.html")
    return Response(data, mimetype="text/html", headers={"Cache-Control": "no-store"})


@bp.post("/demo/token")
@operation(summary="A browser token for the demo page (BROKER_DEMO=1)",
           response=(200, TokenSchema), auth=False)  # fmt: skip
def token() -> MintedToken:
    """A fresh browser token for bucket ``default``, minted with the admin key."""
    services = service()
    admin = services.auth.authenticate(services.settings.admin_key)
    return services.tokens.create(admin, {"bucket": "default", "ttl": TOKEN_TTL})
