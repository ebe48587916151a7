"""Heartbeats on a clock, for activities whose single steps can outlast their heartbeat timeout."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from temporalio import activity

HEARTBEAT_EVERY_S = 2.0


@contextlib.asynccontextmanager
async def heartbeating(progress: dict[str, Any], every_s: float = HEARTBEAT_EVERY_S) -> AsyncIterator[dict[str, Any]]:
    """Heartbeat `progress` (which the caller keeps updating) every `every_s` seconds while the block runs.

    Beating per chunk read is not enough: one await may wait minutes (clamd judging a 64 MiB window, a server-side
    copy of a 50 GB object, a thread walking pickle opcodes), and a heartbeat timeout would retry the activity from
    the start, again and again. A clock keeps reporting for as long as the work is alive; a call that stalls ends
    by its client's own timeout (the S3 client's read timeout, ClamdClient.reply_timeout_s), which retries, and a
    dead worker stops beating altogether.
    """
    async def beat() -> None:
        while True:
            await asyncio.sleep(every_s)
            activity.heartbeat(dict(progress))

    task = asyncio.create_task(beat())
    try:
        yield progress
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
