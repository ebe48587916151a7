"""structlog set-up: readable console in dev, JSON in production, with workflow/activity ids bound in."""

from __future__ import annotations

import logging
import sys

import structlog


def _temporal_context(_logger, _method, event_dict):
    """Add workflow and activity ids to every log line written inside a Temporal activity."""
    from temporalio import activity

    if activity.in_activity():
        info = activity.info()
        event_dict.setdefault("workflow_id", info.workflow_id)
        event_dict.setdefault("activity", info.activity_type)
        event_dict.setdefault("attempt", info.attempt)
    return event_dict


def configure_logging(env: str = "dev", level: int = logging.INFO) -> None:
    renderer = structlog.processors.JSONRenderer() if env == "production" else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            _temporal_context,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per HTTP request drowns everything else


def get_logger(name: str = "bud"):
    return structlog.get_logger(name)
