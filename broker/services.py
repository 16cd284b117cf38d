"""The composition root: every use case wired to one context, without Flask.

``create_app`` puts one ``Services`` in the app for the views; the CLI builds its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .auth import Authenticator
from .browser_tokens import BrowserTokens
from .config import Clock, Settings
from .context import Context
from .db import Database, MetadataStore
from .downloads import Downloads
from .dumping import dumper
from .files import Files
from .keys import Keys
from .links import DownloadLinks
from .schemas import FileSchema
from .storage import S3Storage, Storage, build_storage
from .storage.s3_cors import CorsCheck
from .uploads.complete import Completions
from .uploads.declare import Declarations
from .uploads.form import ProxiedUploads
from .uploads.multipart import PartReissue
from .uploads.tokens import Tokens
from .views import FileViews


@dataclass(frozen=True)
class Services:
    """Every use case, sharing one context (settings, store, storage, clock)."""

    ctx: Context
    auth: Authenticator
    declarations: Declarations
    completions: Completions
    parts: PartReissue
    proxied: ProxiedUploads
    files: Files
    downloads: Downloads
    keys: Keys
    tokens: Tokens
    storage_cors: CorsCheck | None = None
    """S3's CORS rule checked against ``BROKER_CORS_ORIGINS`` (None: nothing to check)."""

    @property
    def settings(self) -> Settings:
        """The validated configuration."""
        return self.ctx.settings

    @property
    def store(self) -> MetadataStore:
        """The metadata store."""
        return self.ctx.store

    @property
    def storage(self) -> Storage:
        """The storage adapter (its abilities: ``ctx.multipart`` and friends)."""
        return self.ctx.storage

    def now(self) -> int:
        """Current time in whole seconds."""
        return self.ctx.now()


def build(
    settings: Settings,
    database: Database,
    *,
    clock: Clock,
    base_url: Callable[[], str],
) -> Services:
    """Wire the use cases; ``base_url`` is where clients reach the broker (for the URLs it
    signs for itself)."""
    storage = build_storage(
        settings, clock=clock, blob_url=lambda token: f"{base_url()}/v1/blobs/{token}"
    )
    links = DownloadLinks(settings.secret_key, base_url=base_url, clock=clock)
    ctx = Context(settings, MetadataStore(database), storage, links, clock)
    storage_cors = None
    if isinstance(storage, S3Storage) and settings.cors_origins:
        storage_cors = CorsCheck(storage, settings.cors_origins, clock)
    views = FileViews(ctx)
    browser_tokens = BrowserTokens(settings.secret_key, clock)
    auth = Authenticator(
        ctx.store,
        admin_key=settings.admin_key,
        allow_anonymous=settings.allow_anonymous,
        tokens=browser_tokens,
        clock=clock,
        cache_ttl=settings.key_cache_ttl,
    )
    return Services(
        ctx=ctx,
        auth=auth,
        # An Idempotency-Key records the answer as the API shows it.
        declarations=Declarations(ctx, views, dumper(FileSchema)),
        completions=Completions(ctx, views),
        parts=PartReissue(ctx, views),
        proxied=ProxiedUploads(ctx, views),
        files=Files(ctx, views),
        downloads=Downloads(ctx, views),
        keys=Keys(ctx, auth),
        tokens=Tokens(ctx, browser_tokens),
        storage_cors=storage_cors,
    )
