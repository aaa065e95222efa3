"""Topic names this deployment uses, resolved once through the settings' namespace."""

from __future__ import annotations

from dataclasses import dataclass

from ioc_shared.contracts.topics import (
    INGEST_FRESHNESS,
    INGEST_INBOUND,
    INGEST_QUALITY,
    INGEST_QUARANTINE,
    INGEST_REJECTED,
    TopicSpec,
    canonical_topic,
    special_topic,
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

    @classmethod
    def resolve(cls, settings: ServiceSettings, registry: Registry) -> IngestTopics:
        fixed = [settings.topic(s) for s in (INGEST_INBOUND, INGEST_REJECTED, INGEST_QUARANTINE,
                                             INGEST_FRESHNESS, INGEST_QUALITY)]
        canonical = {ds: settings.topic(canonical_topic(ds)) for ds in registry.datasets}
        special = {g.id: settings.topic(special_topic(g.unit, g.dataset, g.id))
                   for ds in registry.datasets for g in special_receivers(registry, ds)}
        return cls(
            inbound=fixed[0].name, rejected=fixed[1].name, quarantine=fixed[2].name,
            freshness=fixed[3].name, quality=fixed[4].name,
            canonical={k: v.name for k, v in canonical.items()},
            special={k: v.name for k, v in special.items()},
            specs=(*fixed, *canonical.values(), *special.values()))
