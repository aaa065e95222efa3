"""Special-request sharing (Đ3.6): only the granted fields, for one requester, until expiry."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ioc_shared.grants import project_for_grant
from ioc_shared.registry import Action, Grant, Registry

from ingest.domain.ids import event_ids_of
from ingest.domain.model import Accepted

SHARED_TYPE = "ingest.record.shared"
_shared_id = event_ids_of(SHARED_TYPE)


@dataclass(slots=True)
class SharedView:
    grant: Grant
    record: dict[str, Any]
    event_id: str


def special_receivers(registry: Registry, dataset: str) -> tuple[Grant, ...]:
    """Special-request grants of a dataset that deliver a derived stream."""
    return tuple(g for g in registry.special_grants(dataset) if Action.RECEIVE in g.actions)


def shared_views(accepted: Accepted, grants: tuple[Grant, ...], now: datetime) -> list[SharedView]:
    """Projections of an accepted record for each grant still active at `now`.

    Expiry is judged when ingest publishes: after it, nothing more flows, even
    for records observed earlier.
    """
    return project(accepted, active_grants(grants, now))


def active_grants(grants: tuple[Grant, ...], now: datetime) -> tuple[Grant, ...]:
    """The grants still active at `now` (a batch judges expiry once, at its own `now`)."""
    return tuple(g for g in grants if g.active(now))


def project(accepted: Accepted, active: tuple[Grant, ...]) -> list[SharedView]:
    """Projections of an accepted record for grants already known to be active: only the
    fields each allows, by the shared rule (special-request grants name their fields, so
    no dataset schema is needed)."""
    return [SharedView(grant, project_for_grant(grant, None, accepted.record),
                       shared_event_id(accepted.event_id, grant.id)) for grant in active]


def shared_event_id(accepted_event_id: str, grant_id: str) -> str:
    """The event id of a record's shared copy for a grant (same record -> same id)."""
    return _shared_id(f"{accepted_event_id}\x1f{grant_id}")
