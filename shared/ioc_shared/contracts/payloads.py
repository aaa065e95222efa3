"""What every service's payload models (its `contract.py`) share: a closed base, the origin
of a refused input, and the strict check the tests run on the payloads the code builds."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError


class Closed(BaseModel):
    """Unknown fields refused when the code's own payloads are checked (the published
    schemas stay open: consumers ignore fields they do not know)."""

    model_config = ConfigDict(extra="forbid")


class Origin(Closed):   # where a refused input was read (no docstring: none in the schema)
    topic: str
    partition: int
    offset: int


def check_against(messages: Mapping[str, Mapping[str, type[BaseModel]]], event_type: str,
                  payload: dict[str, Any], *, where: str,
                  model: type[BaseModel] | None = None) -> str | None:
    """Why `payload` does not match the model of `event_type` in `messages` (topic -> event
    type -> model), or `model` if given; None when it does."""
    model = model or next((m[event_type] for m in messages.values() if event_type in m), None)
    if model is None:
        return f"{event_type}: no payload model in {where}"
    try:   # as JSON, strictly: "2" is not an integer, as for a consumer's validator
        model.model_validate_json(orjson.dumps(payload), strict=True)
    except ValidationError as exc:
        return f"{event_type}: {exc}"
    return None
