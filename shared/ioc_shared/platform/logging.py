"""structlog JSON logging with trace and span ids, and personal data kept out.

Library loggers (faststream, aiokafka, uvicorn) go through the same JSON
renderer; exceptions are rendered as JSON (`dict_tracebacks`), never as boxed
text. While a broker is away aiokafka logs every failed attempt: its lines are
rate-limited per message template (`RepeatFilter`: the first, then one a
minute with the count of the ones left out). Fields that carry citizens' personal data are masked whatever the
caller passes: the log is for operators, not a copy of the data.
"""

from __future__ import annotations

import logging
import sys
import time
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


class RepeatFilter(logging.Filter):
    """Lets through the first record of each (logger, message template) at WARNING and
    above from loggers under `prefixes`, then one per `interval_s` carrying how many
    were left out since (`suppressed=N` in its text). Other records pass untouched."""

    def __init__(self, prefixes: tuple[str, ...] = ("aiokafka", "kafka"),
                 interval_s: float = 60.0, clock: Any = time.monotonic) -> None:
        super().__init__()
        self._prefixes = prefixes
        self._interval = interval_s
        self._clock = clock
        self._seen: dict[tuple[str, str], list[float]] = {}  # key -> [last passed, left out]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not record.name.startswith(self._prefixes):
            return True
        key = (record.name, str(record.msg))
        now = self._clock()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self._interval:
            seen[1] += 1
            return False
        left_out = int(seen[1]) if seen is not None else 0
        self._seen[key] = [now, 0]
        if len(self._seen) > 1000:   # templates are few; bound it anyway
            self._seen = {key: self._seen[key]}
        if left_out:
            record.msg = f"{record.msg} (suppressed={left_out} like it since the last one)"
        return True


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
            # Frames without their local variables: those may hold personal data.
            structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(
                show_locals=False, max_frames=20, use_rich=False)),
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    handler.addFilter(RepeatFilter())
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
