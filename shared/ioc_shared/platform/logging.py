"""structlog JSON logging with trace and span ids, and personal data kept out.

Library loggers (faststream, aiokafka, uvicorn) go through the same JSON
renderer. Fields that carry citizens' personal data are masked whatever the
caller passes: the log is for operators, not a copy of the data.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from ioc_shared.platform.telemetry import current_trace_ids

# Field names that may carry personal data of citizens (Vietnamese and English).
PERSONAL_KEYS = frozenset({
    "reporter_name", "reporter_phone", "reporter_email", "reporter", "phone", "email",
    "citizen", "citizen_name", "full_name", "ho_ten", "so_dien_thoai", "cccd",
    "national_id", "address_detail", "payload", "record", "raw", "body",
})


def _add_trace(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    ids = current_trace_ids()
    if ids:
        event["trace_id"], event["span_id"] = ids
    return event


def _mask_personal(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key.lower() in PERSONAL_KEYS and event[key] is not None:
            event[key] = "[redacted]"
    return event


def configure_logging(service: str, level: str = "INFO") -> None:
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace,
        _mask_personal,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    structlog.contextvars.bind_contextvars(service=service)
    for noisy in ("aiokafka", "aiokafka.conn", "kafka"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # FastStream installs its own colourised stream handler; route it through ours.
    for own_handler in ("faststream", "faststream.access", "faststream.access.kafka"):
        lib = logging.getLogger(own_handler)
        lib.handlers.clear()
        lib.propagate = True


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)  # type: ignore[no-any-return]
