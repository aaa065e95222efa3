"""The published contract of ingest: JSON Schema of a submission on `ioc.ingest.inbound.v1`,
and the models of the payloads ingest publishes besides the records.

Field-level schemas are per dataset and version in the registry; this is the
envelope a unit system wraps each record in. `python -m ingest contract`
prints it; `services/ingest/contract/submission.schema.json` is its export.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from ioc_shared.contracts.payloads import Closed as _Closed
from ioc_shared.contracts.payloads import check_against
from pydantic import AwareDatetime, BaseModel, Field

from ingest.domain.codes import Code
from ingest.domain.freshness import LATE_TYPE, RECOVERED_TYPE
from ingest.domain.submission import H_PRINCIPAL, H_SIGNATURE, MAX_CLIENT_EVENT_ID, MAX_RECORD_ID
from ingest.messages import PERSONAL_TYPE_SUFFIX, REJECTED_TYPE


def submission_json_schema() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "ioc.ingest.inbound.v1/submission",
        "title": "Ingest submission (Gói dữ liệu gửi Trung tâm IOC)",
        "description": (
            "Value of a Kafka message on ioc.ingest.inbound.v1, UTF-8 JSON. Key: the unit id. "
            f"Headers: '{H_PRINCIPAL}' = principal id, '{H_SIGNATURE}' = lowercase hex "
            "HMAC-SHA256 of the exact value bytes with the principal's secret. Identity comes "
            "only from the verified principal: unit/source fields in the payload are ignored. "
            "Strict JSON: a key twice in one object is refused (duplicate_key); a leading "
            "UTF-8 BOM is ignored. No string, key or value, may hold NUL, C0/C1 controls but "
            "tab/CR/LF, bidi overrides, zero-width characters, U+FEFF or lone surrogates "
            f"(forbidden_character). Record ids: at most {MAX_RECORD_ID} characters, unique "
            "per unit (canonical records are keyed '<unit>/<record id>')."),
        "type": "object",
        "required": ["dataset", "schema_version", "record"],
        "properties": {
            "dataset": {"type": "string", "description": "Dataset id from the registry, e.g. "
                        "phan-anh-hien-truong"},
            "schema_version": {"type": "integer", "minimum": 1,
                               "description": "Version of the dataset schema the record follows "
                               "(a JSON integer, not a string); older versions are upgraded to "
                               "the canonical one."},
            "record": {"type": "object", "description": "The record's fields, per the dataset schema."},
            "event_id": {"type": "string", "minLength": 1, "maxLength": MAX_CLIENT_EVENT_ID,
                         "description": "Optional client id of this submission, unique per unit: "
                         "a second record with the same event_id is rejected as duplicate."},
        },
        "additionalProperties": True,
    }


# --- what ingest publishes, besides the records (their schemas come from the registry) -----
# Pydantic models of the payloads, for the AsyncAPI document (`MESSAGES`) and for the unit
# tests, which check payloads the code builds against them (`check_payload`). They forbid
# unknown fields for that check only; the published schemas leave objects open.
class ProblemOut(_Closed):
    code: Code
    field: str | None = Field(description="The record field, None for the whole submission")
    expected: str | None = Field(description="What was expected, in Vietnamese")
    message_vi: str


class Rejection(_Closed):
    """`ingest.record.rejected`: on ioc.ingest.rejected.v1 and the unit's own
    ioc.ingest.rejections.<unit>.v1 (keyed by the unit), or on ioc.ingest.unauthenticated.v1
    (keyed by the delivery origin) when the sender could not be verified."""

    unit: str | None = Field(description="The verified unit (None: not identified)")
    code: Code
    message_vi: str
    field: str | None
    expected: str | None
    problems: list[ProblemOut]
    problems_total: int = Field(description="Problems found (the list may be cut)")
    record_index: int = Field(description="Position in an HTTP batch; 0 for Kafka")
    record_id: str | None
    dataset: str | None
    schema_version: int | None
    client_event_id: str | None
    origin: str = Field(description="topic:partition:offset, or the HTTP request id")
    channel: str = Field(description="kafka or http")
    identity_verified: bool
    quarantined: bool = Field(description="The bytes are on ioc.ingest.quarantine.v1")
    replay: bool


class Freshness(_Closed):
    """`ingest.freshness.late` / `ingest.freshness.recovered`, keyed by the dataset."""

    unit: str
    dataset: str
    cadence: str
    last_accepted_at: AwareDatetime | None
    watch_since: AwareDatetime
    deadline: AwareDatetime | None = Field(description="late: when the update was due")
    late_since: AwareDatetime | None
    detected_at: AwareDatetime
    message_vi: str


class QualityCounters(_Closed):
    """`ingest.quality.counters`: cumulative counters of one unit, dataset and day."""

    day: date
    unit: str | None = Field(description="None: an unverified sender")
    dataset: str | None = Field(description="None: a dataset not in the registry")
    accepted: int
    rejected: dict[str, int] = Field(description="Rejections by code")
    rejected_total: int
    as_of: AwareDatetime
    cumulative: bool


class PersonalFields(_Closed):
    """`<dataset>.personal` on ioc.restricted.<dataset>.v1: the citizens' personal fields
    the canonical record leaves out (`fields`: per the dataset's schema)."""

    record_id: str
    canonical_event_id: str = Field(description="Event id of the canonical record")
    fields: dict[str, Any]


FRESHNESS_TYPES = (LATE_TYPE, RECOVERED_TYPE)
QUALITY_TYPE = "ingest.quality.counters"   # ingest.periodic's (a test holds them equal)
MESSAGES: dict[str, dict[str, type[BaseModel]]] = {
    "ioc.ingest.rejected.v1": {REJECTED_TYPE: Rejection},
    "ioc.ingest.unauthenticated.v1": {REJECTED_TYPE: Rejection},
    "ioc.ingest.freshness.v1": dict.fromkeys(FRESHNESS_TYPES, Freshness),
    "ioc.ingest.quality.v1": {QUALITY_TYPE: QualityCounters},
}


def check_payload(event_type: str, payload: dict[str, Any]) -> str | None:
    """Why `payload` does not match its model (None: it does), for the tests' checks."""
    personal = PersonalFields if event_type.endswith(PERSONAL_TYPE_SUFFIX) else None
    return check_against(MESSAGES, event_type, payload, where="ingest.contract", model=personal)
