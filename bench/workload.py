"""The benchmark workload: mixed field-report submissions, about 5 % invalid.

Deterministic (seeded) so every run and every contender sees the same bytes. The
sixteen communes and the town of the district publish, each with its own principal
and signing key; each message is keyed `<unit>/<record_id>`, so the records spread
over all partitions of the inbound topic (a service scales by partitions). The seed
registry grants publishing on field reports to only a few communes: `bench_registry`
writes a copy that adds the others' principals, grants and development keys.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from ioc_shared.registry import sign
from pydantic import BaseModel, ConfigDict, Field

DATASET = "phan-anh-hien-truong"
COMMUNES = ["Lộc An", "xã Lộc Hiệp", "Lộc Hoà", "Lộc Thạnh", "Lộc Thành", "TT. Lộc Ninh",
            "Lộc Tấn", "Lộc Quang", "Loc Khanh"]
CATEGORIES = ["moi-truong", "giao-thong", "an-ninh-trat-tu", "dien-nuoc", "khac"]
PUBLISHING_UNITS = ["tt-loc-ninh", "xa-loc-an", "xa-loc-dien", "xa-loc-hiep", "xa-loc-hoa",
                    "xa-loc-hung", "xa-loc-khanh", "xa-loc-phu", "xa-loc-quang", "xa-loc-tan",
                    "xa-loc-thai", "xa-loc-thanh-nang", "xa-loc-thanh-huyen", "xa-loc-thien",
                    "xa-loc-thinh", "xa-loc-thuan"]
# (unit, principal, signing key): the development keys' pattern.
PUBLISHERS = [(u, f"{u}-system", f"dev-secret-{u}-0001") for u in PUBLISHING_UNITS]
REPO = Path(__file__).resolve().parents[1]


def bench_registry(directory: Path) -> tuple[Path, Path]:
    """The seed registry and development credentials, plus a principal, a publish grant on
    the field reports and a signing key for every publishing unit that lacks one."""
    registry = yaml.safe_load((REPO / "config" / "registry.yaml").read_text(encoding="utf-8"))
    credentials = yaml.safe_load(
        (REPO / "config" / "credentials.dev.yaml").read_text(encoding="utf-8"))
    principals = {p["id"] for p in registry["principals"]}
    grants = {(g["unit"], g["dataset"]) for g in registry["grants"]
              if "publish" in g.get("actions", [])}
    for unit, principal, secret in PUBLISHERS:
        if principal not in principals:
            registry["principals"].append({"id": principal, "unit": unit,
                                           "roles": ["unit-system"]})
        if (unit, DATASET) not in grants:
            registry["grants"].append({"id": f"pub-pa-{unit}", "unit": unit, "dataset": DATASET,
                                       "actions": ["publish"]})
        credentials["secrets"].setdefault(principal, secret)
    registry_file, credentials_file = directory / "registry.yaml", directory / "credentials.yaml"
    registry_file.write_text(yaml.safe_dump(registry, allow_unicode=True, sort_keys=False),
                             encoding="utf-8")
    credentials_file.write_text(yaml.safe_dump(credentials, sort_keys=False), encoding="utf-8")
    return registry_file, credentials_file


class GeoPoint(BaseModel):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class FieldReport(BaseModel):
    """What the reference loop validates: the same record shape, no normalization."""

    model_config = ConfigDict(extra="forbid")
    record_id: str = Field(max_length=64)
    reported_at: datetime
    commune: str
    category: str
    priority: str
    channel: str
    title: str = Field(max_length=200)
    description: str | None = Field(default=None, max_length=4000)
    address: str | None = None
    location: GeoPoint | None = None
    reporter_phone: str | None = None


class Submission(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: str
    schema_version: int
    record: FieldReport


def make_messages(n: int, *, seed: int = 7, invalid_ratio: float = 0.05,
                  run_tag: str = "") -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    """(key, value, headers) triples, signed by the publishing unit's principal."""
    rng = random.Random(seed)
    base = datetime(2026, 11, 2, 1, 0, tzinfo=UTC)
    out = []
    for i in range(n):
        record: dict[str, object] = {
            "record_id": f"PA-{run_tag}{i:07d}",
            "reported_at": (base + timedelta(seconds=i)).isoformat(),
            "commune": rng.choice(COMMUNES),
            "category": rng.choice(CATEGORIES),
            "priority": "binh-thuong",
            "channel": "ung-dung",
            "title": "Đường ngập nước sau mưa lớn",
            "description": "Người dân phản ánh đoạn đường bị ngập, xe máy khó lưu thông.",
            "address": "Ấp 3, gần chợ",
            "location": {"lat": 11.83 + rng.random() * 0.1, "lon": 106.58 + rng.random() * 0.1},
            "reporter_phone": "0912 345 678",
        }
        if rng.random() < invalid_ratio:
            kind = rng.randrange(3)
            if kind == 0:
                del record["title"]
            elif kind == 1:
                record["location"] = {"lat": "north", "lon": 1}
            else:
                record["title"] = "x" * 500
        value = json.dumps({"dataset": DATASET, "schema_version": 2, "record": record},
                           ensure_ascii=False).encode()
        unit, principal, secret = PUBLISHERS[i % len(PUBLISHERS)]
        headers = [("ioc-principal", principal.encode()),
                   ("ioc-signature", sign(secret, value).encode())]
        out.append((f"{unit}/{record['record_id']}".encode(), value, headers))
    return out
