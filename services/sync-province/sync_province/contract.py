"""The payloads sync-province publishes on `ioc.sync-province.status.v1`, as pydantic models.

The AsyncAPI document (`ioc_shared.contracts.asyncapi`) takes their JSON Schemas from
`MESSAGES`; the unit tests check payloads the code builds against them (`check_payload`).
The models forbid unknown fields for that check only; the published schemas leave
objects open (a consumer ignores fields it does not know).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from ioc_shared.contracts.payloads import Closed as _Closed
from ioc_shared.contracts.payloads import check_against
from pydantic import AwareDatetime, BaseModel, Field

STATUS_TYPE = "sync-province.status"     # sync_province.status' (a test holds them equal)
DRIFT_TYPE = "sync-province.drift"


class Status(_Closed):
    """Progress of one stream to one target, every status interval, keyed by the stream."""

    stream: str
    target: str = Field(description="kafka or http (the province's side)")
    positions: dict[str, int] = Field(description="Next district offset by 'topic:partition'")
    last_synced_at: float | None = Field(description="Unix time of the last delivery")
    lag_records: int
    lag_seconds: float = Field(description="Age of the oldest record not yet delivered")
    sent: int = Field(description="Records delivered since start")
    skipped: dict[str, int] = Field(description="Records not mirrored, by reason")
    parked: int
    paused: bool
    failures: dict[str, int] = Field(description="Failed attempts by reason")
    unreachable_s: float
    last_error: str | None
    retention_risk: bool = Field(description="The oldest unsynced record is near the source "
                                 "topic's retention")
    registry_generation: int


class Figures(_Closed):
    count: int
    checksum: str


class Drift(_Closed):
    """A day's reconciliation: counts and checksums of event ids on both sides, what was
    re-sent; or `error` when the province could not be asked."""

    stream: str
    day: date
    target: str | None = None
    district: Figures | None = None
    province: Figures | None = None
    drift: bool | None = None
    missing: int | None = None
    unexpected: int | None = None
    repaired: int | None = None
    error: str | None = None


# --- on the PROVINCE's cluster (topics named `<prefix>.<district topic>`) -----------------
class Cursor(_Closed):
    """Value on `<prefix>.ioc.sync-province.cursor.v1`, key `<target>|<source topic>|<partition>`:
    the next district offset, written in the same transaction as the records."""

    next_offset: int


class Checkpoint(_Closed):
    """Value on `<prefix>.ioc.sync-province.checkpoints.v1`, key the district id: a signed
    checkpoint (Ed25519) of the head of the district's hash-chained share log."""

    type: str = Field(description="sync-province.share-log.checkpoint")
    district: str
    head_seq: int
    head_hash: str
    signed_at: AwareDatetime
    public_key: str = Field(description="Ed25519 public key, hex")
    signature: str = Field(description="Ed25519 signature of the checkpoint message, hex")


PROVINCE_MESSAGES: dict[str, type[BaseModel]] = {"ioc.sync-province.cursor.v1": Cursor,
                                                 "ioc.sync-province.checkpoints.v1": Checkpoint}
# Headers sync-province puts on every mirrored record (besides the source's event id and
# type, dataset and trace context); described in `ioc_shared.contracts.asyncapi.HEADERS`.
ORIGIN_HEADERS = ("ioc-origin-ioc", "ioc-origin-topic", "ioc-origin-partition",
                  "ioc-origin-offset", "ioc-grant-ids")


def province_defaults() -> tuple[str, str, list[str]]:
    """(topic prefix on the province's cluster, the province's principal, the event topics
    forwarded): the settings' defaults, which the document describes."""
    from sync_province.settings import SyncSettings

    fields = SyncSettings.model_fields
    prefix = fields["province_topic_prefix"].default or fields["district"].default
    events = [t.strip() for t in str(fields["event_topics"].default).split(",") if t.strip()]
    return str(prefix), str(fields["province_principal"].default), events


MESSAGES: dict[str, dict[str, type[BaseModel]]] = {
    "ioc.sync-province.status.v1": {STATUS_TYPE: Status, DRIFT_TYPE: Drift}}


def check_payload(event_type: str, payload: dict[str, Any]) -> str | None:
    """Why `payload` does not match its model (None: it does), for the tests' checks."""
    return check_against(MESSAGES, event_type, payload, where="sync_province.contract")
