"""The AsyncAPI document: generated from the code, committed, valid, and the compatibility gate."""

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ioc_shared.contracts import Envelope
from ioc_shared.contracts.asyncapi import (
    REGENERATE,
    RELEASE,
    asyncapi_document,
    asyncapi_yaml,
    breaking_changes,
    compatibility_problems,
    default_registry,
    family,
    snapshots,
    write_release,
)
from ioc_shared.contracts.topics import TOPICS, canonical_topic
from ioc_shared.platform.settings import REPO_ROOT

DOCS = REPO_ROOT / "docs" / "contracts"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi_document(default_registry())


def test_the_committed_asyncapi_document_matches_the_code() -> None:
    committed = (DOCS / "asyncapi.yaml").read_text(encoding="utf-8")
    assert committed == asyncapi_yaml(), (
        f"docs/contracts/asyncapi.yaml differs from the code: regenerate it with `{REGENERATE}` "
        "(python -m ioc_shared.contracts docs/contracts) and commit it")


def test_every_topic_and_dataset_is_a_channel_with_its_kafka_facts(document: dict[str, Any]) -> None:
    by_address = {c["address"]: c for c in document["channels"].values()}
    registry = default_registry()
    for spec in (*TOPICS, *(canonical_topic(d) for d in registry.datasets)):
        channel = by_address[spec.name]
        kafka = channel["bindings"]["kafka"]
        assert (kafka["partitions"], kafka["topicConfiguration"]["retention.ms"]) == (
            spec.partitions, spec.retention_ms)
        assert channel["x-key"] == spec.key and channel["messages"]
    for operation in document["operations"].values():
        channel_id = operation["channel"]["$ref"].rsplit("/", 1)[-1]
        for ref in operation["messages"]:
            assert ref["$ref"].rsplit("/", 1)[-1] in document["channels"][channel_id]["messages"]
    assert document["asyncapi"] == "3.0.0"


def test_the_document_parses_as_asyncapi_3(document: dict[str, Any]) -> None:
    """FastStream's own AsyncAPI 3.0 models (it generates such documents for its apps)."""
    from faststream.specification.asyncapi.v3_0_0.schema.schema import ApplicationSchema

    checked = copy.deepcopy(document)
    for server in checked["servers"].values():
        server.setdefault("pathname", "")  # optional in the specification, required by the model
    parsed = ApplicationSchema.model_validate(checked)
    assert set(parsed.channels) == set(document["channels"])
    assert {op.action.value for op in parsed.operations.values()} == {"send", "receive"}


def test_every_message_schema_is_valid_json_schema(document: dict[str, Any]) -> None:
    for message in document["components"]["messages"].values():
        jsonschema.Draft202012Validator.check_schema(message["payload"])
        assert message["headers"]["type"] == "object"


def message(document: dict[str, Any], topic: str, name: str) -> dict[str, Any]:
    channel = next(c for c in document["channels"].values() if c["address"] == topic)
    ref = channel["messages"][name]["$ref"].rsplit("/", 1)[-1]
    found: dict[str, Any] = document["components"]["messages"][ref]
    return found


def test_what_the_code_sends_validates_and_what_it_refuses_does_not(document: dict[str, Any]) -> None:
    command = message(document, "ioc.routing.commands.v1", "routing.command.assign")
    assert "ioc-signature" in command["headers"]["properties"]
    env = Envelope(type="routing.command.assign", source_unit="ioc-loc-ninh", subject="INC-1",
                   payload={"command_id": "0193a0c4-7b7e-7000-8000-000000000001", "unit": "phong-kt-ht"})
    jsonschema.validate(json.loads(env.to_bytes()), command["payload"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(env.model_copy(update={"payload": {"unit": "x"}}).to_bytes()),
                            command["payload"])
    with pytest.raises(jsonschema.ValidationError):  # another verb on this message
        jsonschema.validate(json.loads(env.model_copy(update={"type": "routing.command.verify"})
                                       .to_bytes()), command["payload"])
    accepted = message(document, "ioc.data.phan-anh-hien-truong.v1", "ingest.record.accepted")
    record = accepted["payload"]["properties"]["payload"]["properties"]["record"]
    assert {"record_id", "reported_at", "commune", "category", "priority"} <= set(record["required"])
    assert record["properties"]["reporter_phone"]["x-personal-data"] is True
    assert accepted["x-schema-version"] == 2


def test_message_schemas_are_compatible_with_their_last_release() -> None:
    problems = compatibility_problems(DOCS / "released")
    assert not problems, (
        "breaking changes to released message schemas (a consumer written against the release "
        "would break):\n  " + "\n  ".join(problems) + "\nEither keep the change compatible (add "
        "fields as optional, keep types), or publish it as a new version: a new topic `.vN+1` "
        "or a higher schema_version; then record the release with `" + RELEASE + "`.")


# --- the comparison on small schemas --------------------------------------------------------
BASE = {"type": "object", "required": ["id"], "properties": {
    "id": {"type": "string"},
    "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    "place": {"type": "object", "required": ["lat"], "properties": {"lat": {"type": "number"},
                                                                    "lon": {"type": "number"}}},
    "tags": {"type": "array", "items": {"type": "string"}},
    "kind": {"const": "a", "type": "string"},
}}


def changed(edit: Any) -> dict[str, Any]:
    schema = copy.deepcopy(BASE)
    edit(schema)
    return schema


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda s: s["properties"].pop("note"), ["note: field removed"]),
    (lambda s: s["properties"]["id"].update(type="integer"),
     ["id: type changed from ['string'] to ['integer']"]),
    (lambda s: s["properties"].update(priority={"type": "string"}) or s["required"].append("priority"),
     ["priority: field became required"]),
    (lambda s: s["required"].append("note"), ["note: field became required"]),
    (lambda s: s["properties"]["place"]["properties"].pop("lon"), ["place.lon: field removed"]),
    (lambda s: s["properties"]["place"]["required"].append("lon"), ["place.lon: field became required"]),
    (lambda s: s["properties"]["tags"]["items"].update(type="integer"),
     ["tags[]: type changed from ['string'] to ['integer']"]),
    (lambda s: s["properties"]["id"].update(type=["string", "null"]),
     ["id: type changed from ['string'] to ['null', 'string']"]),
    (lambda s: s["properties"]["kind"].update(const="b"), ["kind: constant changed from 'a' to 'b'"]),
])
def test_breaking_changes_are_named(edit: Any, expected: list[str]) -> None:
    assert breaking_changes(BASE, changed(edit)) == expected


@pytest.mark.parametrize("edit", [
    lambda s: s["properties"].update(extra={"type": "string"}),            # a new optional field
    lambda s: s["required"].clear() or s["required"].append("id"),        # same required set
    lambda s: s["properties"]["id"].update(maxLength=64, description="x"),  # constraints, docs
    lambda s: s["properties"]["place"]["properties"].update(alt={"type": "number"}),
])
def test_compatible_changes_pass(edit: Any) -> None:
    assert breaking_changes(BASE, changed(edit)) == []


def released_with(tmp_path: Path, relative: str, edit: Any) -> Path:
    """The current release in `tmp_path`, one snapshot edited as if it had been released so."""
    write_release(tmp_path)
    path = tmp_path / relative
    snapshot = json.loads(path.read_text(encoding="utf-8"))
    edit(snapshot)
    path.write_text(json.dumps(snapshot), encoding="utf-8")
    return tmp_path


VERIFY = "ioc.routing.commands/routing.command.verify.json"


def legacy_field(snapshot: dict[str, Any]) -> None:
    payload = snapshot["schema"]["properties"]["payload"]
    payload["properties"]["legacy"] = {"type": "string"}


def test_a_field_removed_since_the_release_fails_the_gate(tmp_path: Path) -> None:
    [problem] = compatibility_problems(released_with(tmp_path, VERIFY, legacy_field))
    assert problem == "ioc.routing.commands.v1 routing.command.verify v1: payload.legacy: field removed"


def test_a_new_schema_version_or_topic_version_may_break(tmp_path: Path) -> None:
    def older_version(snapshot: dict[str, Any]) -> None:
        legacy_field(snapshot)
        snapshot["schema_version"] = 0

    assert compatibility_problems(released_with(tmp_path / "a", VERIFY, older_version)) == []

    def older_topic(snapshot: dict[str, Any]) -> None:
        legacy_field(snapshot)
        snapshot["topic"] = "ioc.routing.commands.v0"

    assert compatibility_problems(released_with(tmp_path / "b", VERIFY, older_topic)) == []


def test_a_released_message_that_disappeared_fails_unless_its_topic_moved_on(tmp_path: Path) -> None:
    write_release(tmp_path)
    gone = {"topic": "ioc.routing.commands.v1", "message": "routing.command.teleport",
            "schema_version": 1, "schema": {"type": "object"}}
    (tmp_path / "ioc.routing.commands" / "routing.command.teleport.json").write_text(json.dumps(gone))
    [problem] = compatibility_problems(tmp_path)
    assert problem.startswith("ioc.routing.commands.v1 routing.command.teleport: released message no")
    gone["topic"] = "ioc.routing.commands.v0"  # released under v0; v1 is its successor
    (tmp_path / "ioc.routing.commands" / "routing.command.teleport.json").write_text(json.dumps(gone))
    assert compatibility_problems(tmp_path) == []


def test_topic_families_and_snapshot_paths() -> None:
    assert family("ioc.routing.commands.v12") == ("ioc.routing.commands", 12)
    assert family("unversioned") == ("unversioned", 0)
    assert "ioc.ingest.inbound/ingest.submission.json" in snapshots(default_registry())


def test_the_document_is_yaml_that_loads_back() -> None:
    assert yaml.safe_load(asyncapi_yaml())["info"]["title"].startswith("IOC event backbone")
