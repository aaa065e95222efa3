"""`ioc check-config`: the registry (as ingest checks it) and routing's policy against it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest.domain import build_catalog
from ingest.settings import IngestSettings
from ioc_shared.registry import RegistryError, load_registry
from routing.config import RoutingConfigError, load_policy, organisation_from_registry
from routing.settings import RoutingSettings


def check_registry(settings: IngestSettings) -> dict[str, Any]:
    creds = settings.credentials_file
    out: dict[str, Any] = {"file": str(settings.registry_file),
                           "credentials": str(creds) if creds else None, "errors": [], "warnings": []}
    try:
        registry = load_registry(settings.registry_file, creds)
        catalog = build_catalog(registry, settings.future_tolerance_s, settings.geo_margin_deg)
    except (RegistryError, OSError) as exc:
        out["errors"] = list(getattr(exc, "problems", [str(exc)]))
        return out
    out["errors"] = list(catalog.problems())
    now = datetime.now(UTC)
    out["warnings"] = [f"principal '{p.id}' has no secret in {creds}"
                       for p in registry.principals.values() if registry.secret_of(p.id) is None]
    out["warnings"] += [f"special-request grant '{g.id}' expired at {g.expires_at.isoformat()}"
                        for g in registry.special_grants()
                        if g.expires_at is not None and g.expires_at <= now]
    out.update(units=len(registry.units), datasets=len(registry.datasets), grants=len(registry.grants))
    return out


def check_routing_policy(settings: RoutingSettings) -> dict[str, Any]:
    path: Path = settings.routing_config
    out: dict[str, Any] = {"file": str(path), "errors": []}
    try:
        org = organisation_from_registry(load_registry(settings.registry_file))
        policy = load_policy(path, org)
    except (RegistryError, RoutingConfigError, OSError) as exc:
        out["errors"] = list(getattr(exc, "problems", [str(exc)]))
        return out
    out.update(rules=len(policy.rules), deadlines=len(policy.deadlines),
               escalation_entries=len(policy.escalation),
               escalation_steps=sum(len(e.chain) for e in policy.escalation),
               incident_datasets=sorted(org.incident_datasets))
    return out
