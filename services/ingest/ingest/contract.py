"""The published inbound contract: JSON Schema of a submission on `ioc.ingest.inbound.v1`.

Field-level schemas are per dataset and version in the registry; this is the
envelope a unit system wraps each record in. `python -m ingest contract`
prints it; `services/ingest/contract/submission.schema.json` is its export.
"""

from __future__ import annotations

from typing import Any

from ingest.domain.submission import H_PRINCIPAL, H_SIGNATURE, MAX_CLIENT_EVENT_ID, MAX_RECORD_ID


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
