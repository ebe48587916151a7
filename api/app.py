"""FastAPI app factory. The lifespan holds one PostgreSQL pool and one Temporal client for all requests."""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.errors import ERROR_RESPONSES, install_error_handlers
from api.limits import RequestLimits
from api.metrics import install_metrics
from api.routers import (api_keys, clusters, dashboard, endpoints, health, measurements, models, optimizations,
                         projects, providers, routes, uploads, usage)
from api.bootstrap import ensure_admin_token, ensure_inference_key, ensure_local_cluster, seal_stored_secrets
from core.db import apply_migrations, create_pool
from core.logging import configure_logging
from core.settings import Settings, get_settings
from core.temporal import connect_temporal, temporal_tls
from workflows.starters import ensure_reoptimize_schedule


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        configure_logging(settings.env)
        pool = await create_pool(settings.database_url, settings.db_pool_min, settings.db_pool_max)
        await apply_migrations(pool)
        temporal = await connect_temporal(settings.temporal_address, settings.temporal_namespace,
                                          tls=temporal_tls(settings))
        app.state.settings, app.state.pool, app.state.temporal = settings, pool, temporal
        await ensure_admin_token(pool, settings)
        await ensure_inference_key(pool, settings)
        await seal_stored_secrets(pool, settings)
        await ensure_local_cluster(pool, temporal, settings)
        await ensure_reoptimize_schedule(temporal, settings)
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(
        title="Bud Foundry",
        description="Control plane that takes an LLM from registration to a monitored, right-sized endpoint.",
        version="0.1.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    install_metrics(app)
    app.add_middleware(RequestLimits, max_body_bytes=settings.api_max_body_bytes,
                       max_header_bytes=settings.api_max_header_bytes,
                       streamed=(("PUT", uploads.UPLOAD_PATH_PREFIX, settings.upload_max_file_bytes),
                                 ("POST", measurements.PATH, measurements.MAX_IMPORT_BYTES)))
    for router in (health.router, projects.router, clusters.router, models.router, optimizations.router,
                   endpoints.router, routes.router, dashboard.router, api_keys.router, providers.router, usage.router,
                   uploads.router, measurements.router):
        app.include_router(router, responses=ERROR_RESPONSES)
    return app
