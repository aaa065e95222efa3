"""The benchmark workload: mixed field-report submissions, about 5 % invalid.

Deterministic (seeded) so every run and every contender sees the same bytes.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

from ioc_shared.registry import sign
from pydantic import BaseModel, ConfigDict, Field

DATASET = "phan-anh-hien-truong"
COMMUNES = ["Lộc An", "xã Lộc Hiệp", "Lộc Hoà", "Lộc Thạnh", "Lộc Thành", "TT. Lộc Ninh",
            "Lộc Tấn", "Lộc Quang", "Loc Khanh"]
CATEGORIES = ["moi-truong", "giao-thong", "an-ninh-trat-tu", "dien-nuoc", "khac"]
PUBLISHERS = [("xa-loc-an-system", "dev-secret-xa-loc-an-0001"),
              ("tt-loc-ninh-system", "dev-secret-tt-loc-ninh-0001"),
              ("xa-loc-thanh-huyen-system", "dev-secret-xa-loc-thanh-huyen-0001")]


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
        principal, secret = PUBLISHERS[i % len(PUBLISHERS)]
        headers = [("ioc-principal", principal.encode()),
                   ("ioc-signature", sign(secret, value).encode())]
        out.append((principal.encode(), value, headers))
    return out
