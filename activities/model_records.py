"""Activities on PostgreSQL for the registry: record the scan's outcome."""

from __future__ import annotations

import asyncpg
from temporalio import activity

from core.logging import get_logger
from control.payloads.models import RecordScanInput
from control.store import models

log = get_logger(__name__)


class ModelRecordActivities:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    @activity.defn
    async def record_model_scan(self, outcome: RecordScanInput) -> None:
        async with self.pool.acquire() as conn:
            await models.record_scan(conn, outcome)
        log.info("model scanned", model_id=str(outcome.model_id), status=outcome.status.value,
                 findings=len(outcome.report.findings))
