from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from ingest.domain import Inbound, Ingestor, SchemaCatalog
from ioc_shared.registry import Registry, load_registry, sign

REPO = Path(__file__).resolve().parents[4]
NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def registry() -> Registry:
    return load_registry(REPO / "config" / "registry.yaml", REPO / "config" / "credentials.dev.yaml")


@pytest.fixture(scope="session")
def catalog(registry: Registry) -> SchemaCatalog:
    return SchemaCatalog(registry)


@pytest.fixture(scope="session")
def ingestor(catalog: SchemaCatalog) -> Ingestor:
    return Ingestor(catalog, max_message_bytes=256 * 1024)


SECRETS = {"xa-loc-an-system": "dev-secret-xa-loc-an-0001",
           "xa-loc-thanh-huyen-system": "dev-secret-xa-loc-thanh-huyen-0001",
           "trung-tam-y-te-system": "dev-secret-trung-tam-y-te-0001"}


def signed(body: Any, principal: str = "xa-loc-an-system", *, raw: bytes | None = None,
           secret: str | None = None, origin: str = "t:0:1") -> Inbound:
    value = raw if raw is not None else orjson.dumps(body)
    signature = sign(secret or SECRETS[principal], value)
    return Inbound(value=value, origin=origin,
                   headers=(("ioc-principal", principal.encode()), ("ioc-signature", signature.encode())))


def report(**overrides: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "record_id": "PA-1", "reported_at": "28/11/2026 14:30", "commune": "Lộc An",
        "category": "moi-truong", "priority": "cao", "channel": "ung-dung", "title": "Rác thải",
    }
    record.update(overrides)
    return {"dataset": "phan-anh-hien-truong", "schema_version": 2, "record": record}
