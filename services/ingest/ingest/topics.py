"""Topic names this deployment uses, resolved once through the settings' namespace."""

from __future__ import annotations

from dataclasses import dataclass

from ioc_shared.contracts.topics import (
    INGEST_FRESHNESS,
    INGEST_INBOUND,
    INGEST_QUALITY,
    INGEST_QUARANTINE,
    INGEST_REJECTED,
    INGEST_UNAUTHENTICATED,
    TopicSpec,
    canonical_topic,
    restricted_topic,
    special_topic,
    unit_rejections_topic,
)
from ioc_shared.platform.settings import ServiceSettings
from ioc_shared.registry import Registry

from ingest.domain import special_receivers


@dataclass(frozen=True)
class IngestTopics:
    inbound: str
    rejected: str
    quarantine: str
    freshness: str
    quality: str
    canonical: dict[str, str]          # dataset id -> topic
    special: dict[str, str]            # grant id -> topic
    specs: tuple[TopicSpec, ...]
    unauthenticated: str = ""
    restricted: dict[str, str] | None = None        # dataset id -> topic (personal fields)
    unit_rejections: dict[str, str] | None = None   # unit id -> its own rejection feed

    @classmethod
    def resolve(cls, settings: ServiceSettings, registry: Registry) -> IngestTopics:
        fixed = [settings.topic(s) for s in (INGEST_INBOUND, INGEST_REJECTED, INGEST_QUARANTINE,
                                             INGEST_FRESHNESS, INGEST_QUALITY,
                                             INGEST_UNAUTHENTICATED)]
        canonical = {ds: settings.topic(canonical_topic(ds)) for ds in registry.datasets}
        restricted = {ds: settings.topic(restricted_topic(ds)) for ds in registry.datasets
                      if registry.personal_fields(ds)}
        special = {g.id: settings.topic(special_topic(g.unit, g.dataset, g.id))
                   for ds in registry.datasets for g in special_receivers(registry, ds)}
        # Every unit that can authenticate (has a principal) can be rejected: its own feed.
        feeds = {u: settings.topic(unit_rejections_topic(u))
                 for u in sorted({p.unit for p in registry.principals.values()})}
        return cls(
            inbound=fixed[0].name, rejected=fixed[1].name, quarantine=fixed[2].name,
            freshness=fixed[3].name, quality=fixed[4].name, unauthenticated=fixed[5].name,
            canonical={k: v.name for k, v in canonical.items()},
            special={k: v.name for k, v in special.items()},
            restricted={k: v.name for k, v in restricted.items()},
            unit_rejections={k: v.name for k, v in feeds.items()},
            specs=(*fixed, *canonical.values(), *restricted.values(), *special.values(),
                   *feeds.values()))
