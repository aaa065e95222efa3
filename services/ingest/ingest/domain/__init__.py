"""Pure ingest rules: normalization, schema validation and upgrade, grants, freshness.

Nothing here does I/O or imports asyncpg, faststream or aiokafka.
"""

from ingest.domain.codes import Code
from ingest.domain.freshness import FreshnessPolicy, Transition, WatchState, assess, expected_publishers
from ingest.domain.model import Accepted, Decision, Inbound, Problem, Rejected, as_duplicate
from ingest.domain.schema import Limits, SchemaCatalog, upgrade
from ingest.domain.sharing import SharedView, active_grants, project, shared_views, special_receivers
from ingest.domain.submission import ACCEPTED_TYPE, Ingestor

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
    "active_grants",
    "as_duplicate",
    "assess",
    "expected_publishers",
    "project",
    "shared_views",
    "special_receivers",
    "upgrade",
]
