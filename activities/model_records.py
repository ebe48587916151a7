"""Activities on PostgreSQL for the registry: record the scan's outcome."""

from __future__ import annotations

import asyncpg
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.logging import get_logger
from control.payloads.models import RecordScanInput
from control.store import models

log = get_logger(__name__)


class ModelRecordActivities:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    @activity.defn
    async def record_model_scan(self, outcome: RecordScanInput) -> None:
        """PostgreSQL down retries; an outcome it refuses as data (text it cannot store) would be refused on every
        retry, so it fails the registration with the database's reason (RegisterModel then records FAILED)."""
        try:
            async with self.pool.acquire() as conn:
                await models.record_scan(conn, outcome)
        except asyncpg.DataError as error:
            raise ApplicationError(f"the scan's outcome could not be stored: {error}", type="UnstorableOutcome",
                                   non_retryable=True) from error
        log.info("model scanned", model_id=str(outcome.model_id), status=outcome.status.value,
                 findings=len(outcome.report.findings))
