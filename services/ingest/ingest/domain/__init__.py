"""Pure ingest rules: normalization, schema validation and upgrade, grants, freshness.

Nothing here does I/O or imports asyncpg, faststream or aiokafka.
"""

from ingest.domain.codes import Code
from ingest.domain.freshness import FreshnessPolicy, Transition, WatchState, assess, expected_publishers
from ingest.domain.model import Accepted, Decision, Inbound, Problem, Rejected, as_duplicate
from ingest.domain.schema import Limits, SchemaCatalog, build_catalog, upgrade
from ingest.domain.sharing import (
    SharedView,
    active_grants,
    project,
    shared_event_id,
    shared_views,
    special_receivers,
)
from ingest.domain.submission import ACCEPTED_TYPE, Ingestor, accepted_ids

__all__ = [
    "ACCEPTED_TYPE",
    "Accepted",
    "Code",
    "Decision",
    "FreshnessPolicy",
    "Inbound",
    "Ingestor",
    "Limits",
    "Problem",
    "Rejected",
    "SchemaCatalog",
    "SharedView",
    "Transition",
    "WatchState",
    "accepted_ids",
    "active_grants",
    "as_duplicate",
    "assess",
    "build_catalog",
    "expected_publishers",
    "project",
    "shared_event_id",
    "shared_views",
    "special_receivers",
    "upgrade",
]
