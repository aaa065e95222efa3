"""The figures and the `report.published` payload follow their JSON Schemas."""

from __future__ import annotations

import jsonschema
import orjson
import pytest
from reporting.contract import figures_json_schema, published_json_schema
from reporting_examples import figures


def test_figures_validate_and_a_broken_one_does_not() -> None:
    f = orjson.loads(orjson.dumps(figures()))
    jsonschema.validate(f, figures_json_schema())
    payload = {"report_id": "r", "kind": "monthly", "period": f["period"], "version": 1,
               "status": "draft", "number": None, "issued_on": None, "files": {"pdf": "x.pdf"},
               "figures": f}
    jsonschema.validate(payload, published_json_schema())
    f["incidents"]["totals"]["received"] = "12"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(f, figures_json_schema())
