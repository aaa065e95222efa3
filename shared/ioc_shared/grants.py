"""Grant projection: which fields of a dataset's record a principal may receive.

The one implementation of "only granted datasets, only granted fields" (Đ3.5, Đ3.6,
Đ11.2): sync-province projects every record it sends to the provincial IOC through it,
and ingest every record of its special-request streams (`project_for_grant`).

Rules, for the unit the principal acts for and the grants active now:
- no active `read` or `receive` grant on the dataset: nothing (`None`);
- a grant that names `fields`: exactly those fields, personal ones included (naming a
  personal field is the explicit decision the regulation asks for);
- a default-sharing grant without `fields`: every field of the canonical schema that is
  not `personal`; fields outside the schema never leave;
- a special-request grant without `fields`: nothing (Đ3.6: a special request names its
  fields; the registry refuses one that does not, this is the safe answer if one slips by);
- the fields keep the record's order;
- several grants: the union of what each allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ioc_shared.registry import Action, Dataset, Grant, Registry, SharingMode

_RECEIVING = (Action.READ, Action.RECEIVE)


@dataclass(frozen=True, slots=True)
class Projection:
    """What a principal may receive of one dataset, and under which grants."""

    dataset: str
    fields: frozenset[str]
    grant_ids: tuple[str, ...]

    def apply(self, record: dict[str, Any]) -> dict[str, Any]:
        return {name: value for name, value in record.items() if name in self.fields}


def fields_of_grant(grant: Grant, dataset: Dataset | None) -> frozenset[str]:
    """The fields one grant allows of `dataset` (canonical schema; only a default-sharing
    grant without `fields` reads it, and allows nothing without it)."""
    if grant.fields is not None:
        return frozenset(grant.fields)
    if grant.mode is SharingMode.SPECIAL_REQUEST or dataset is None:
        return frozenset()
    schema = dataset.schema_for(dataset.canonical_version)
    if schema is None:
        return frozenset()
    return frozenset(name for name, spec in schema.fields.items() if not spec.personal)


def project_for_grant(grant: Grant, dataset: Dataset | None,
                      record: dict[str, Any]) -> dict[str, Any]:
    """`record` reduced to what `grant` allows, in the record's order (ingest's
    special-request streams: they name their fields, so need no `dataset`)."""
    allowed = fields_of_grant(grant, dataset)
    return {name: value for name, value in record.items() if name in allowed}


def projection(registry: Registry, principal: str, dataset: str,
               at: datetime | None = None) -> Projection | None:
    """What `principal` may receive of `dataset` at `at` (now), or None when nothing."""
    holder = registry.principals.get(principal)
    spec = registry.datasets.get(dataset)
    if holder is None or spec is None:
        return None
    at = at or datetime.now(UTC)
    grants = [g for g in registry.grants
              if g.unit == holder.unit and g.dataset == dataset and g.active(at)
              and any(a in g.actions for a in _RECEIVING)]
    if not grants:
        return None
    fields: frozenset[str] = frozenset().union(*(fields_of_grant(g, spec) for g in grants))
    return Projection(dataset, fields, tuple(sorted(g.id for g in grants)))


def project(registry: Registry, principal: str, dataset: str, record: dict[str, Any],
            at: datetime | None = None) -> dict[str, Any] | None:
    """`record` as `principal` may receive it, or None when the dataset is not granted."""
    found = projection(registry, principal, dataset, at)
    return None if found is None else found.apply(record)
