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
    # Personal fields go to the restricted topic; the canonical record keeps a pseudonym.
    assert "reporter_phone" not in record["properties"] and "reporter_ref" in record["properties"]
    assert accepted["x-schema-version"] == 2
    personal = message(document, "ioc.restricted.phan-anh-hien-truong.v1",
                       "phan-anh-hien-truong.personal")
    fields = personal["payload"]["properties"]["payload"]["properties"]["fields"]
    assert fields["properties"]["reporter_phone"]["x-personal-data"] is True
    assert set(fields["properties"]) == {"reporter_name", "reporter_phone"}


def test_every_topic_has_a_message_per_event_type(document: dict[str, Any]) -> None:
    """No topic is documented as a generic envelope (`*`, `family.*`): each message names
    its type and describes its payload's fields."""
    for channel in document["channels"].values():
        for name, ref in channel["messages"].items():
            assert name != "*" and not name.endswith(".*"), (channel["address"], name)
            body = document["components"]["messages"][ref["$ref"].rsplit("/", 1)[-1]]["payload"]
            payload = body.get("properties", {}).get("payload", body)
            assert payload.get("properties") or payload.get("description"), (
                channel["address"], name)


def test_registry_derived_topics_are_channels(document: dict[str, Any]) -> None:
    from ioc_shared.contracts.topics import restricted_topic, unit_rejections_topic

    by_address = {c["address"]: c for c in document["channels"].values()}
    registry = default_registry()
    derived = [restricted_topic("phan-anh-hien-truong"),
               *(unit_rejections_topic(p.unit) for p in registry.principals.values())]
    for spec in derived:
        kafka = by_address[spec.name]["bindings"]["kafka"]
        assert (kafka["partitions"], kafka["topicConfiguration"]["retention.ms"]) == (
            spec.partitions, spec.retention_ms)
    feed = by_address[unit_rejections_topic("xa-loc-an").name]
    assert list(feed["messages"]) == ["ingest.record.rejected"]


def test_payload_schemas_are_self_contained_and_open(document: dict[str, Any]) -> None:
    """No `$ref` left for the gate to miss, and no `additionalProperties: false` inside a
    payload: consumers must accept the optional fields added later."""
    def walk(node: Any, inside_payload: bool) -> None:
        if isinstance(node, dict):
            assert "$ref" not in node and "$defs" not in node
            if inside_payload:
                assert node.get("additionalProperties") is not False
            for key, value in node.items():
                walk(value, inside_payload or key == "payload")
        elif isinstance(node, list):
            for item in node:
                walk(item, inside_payload)

    for m in document["components"]["messages"].values():
        walk(m["payload"].get("properties", {}).get("payload", {}), True)


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
    "maybe_tags": {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]},
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
    (lambda s: s["properties"]["maybe_tags"]["anyOf"][0]["items"].update(type="integer"),
     ["maybe_tags[]: type changed from ['string'] to ['integer']"]),
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


ASSIGNED = "ioc.routing.incident-events/routing.incident.assigned.json"


def _payload_of(snapshot: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = snapshot["schema"]["properties"]["payload"]
    return found


def test_the_gate_fails_on_a_removed_field_of_an_incident_event(tmp_path: Path) -> None:
    [problem] = compatibility_problems(released_with(
        tmp_path, ASSIGNED, lambda s: _payload_of(s)["properties"].update(
            escalation_level={"type": "integer"})))
    assert problem == ("ioc.routing.incident-events.v1 routing.incident.assigned v1: "
                       "payload.escalation_level: field removed")


def test_the_gate_fails_on_a_retyped_field(tmp_path: Path) -> None:
    def released_as_text(snapshot: dict[str, Any]) -> None:
        _payload_of(snapshot)["properties"]["assignment_no"] = {"type": "string"}

    [problem] = compatibility_problems(released_with(tmp_path, ASSIGNED, released_as_text))
    assert problem.endswith("payload.assignment_no: type changed from ['string'] to ['integer']")


def test_the_gate_fails_on_a_new_required_field(tmp_path: Path) -> None:
    def released_optional(snapshot: dict[str, Any]) -> None:
        _payload_of(snapshot)["required"].remove("rule_id")

    [problem] = compatibility_problems(released_with(tmp_path, ASSIGNED, released_optional))
    assert problem.endswith("payload.rule_id: field became required")


def test_the_gate_fails_on_a_nested_change_inside_a_model(tmp_path: Path) -> None:
    """Nested models are inlined, so a field of `policy` or `actor` is compared too."""
    def nested(snapshot: dict[str, Any]) -> None:
        _payload_of(snapshot)["properties"]["actor"]["properties"]["roles"] = {"type": "array"}

    [problem] = compatibility_problems(released_with(tmp_path, ASSIGNED, nested))
    assert problem.endswith("payload.actor.roles: field removed")


def test_a_generic_release_is_refined_by_per_type_messages_that_keep_its_promises(
        tmp_path: Path) -> None:
    """`routing.incident.*` was released as an envelope with any payload: the per-type
    messages refine it, and one that breaks what it promised is caught."""
    write_release(tmp_path)
    generic = json.loads((DOCS / "released" / "ioc.routing.incident-events" /
                          "routing.incident.any.json").read_text(encoding="utf-8"))
    assert compatibility_problems(tmp_path) == []
    generic["schema"]["properties"]["source_unit"]["type"] = "integer"
    (tmp_path / "ioc.routing.incident-events" / "routing.incident.any.json").write_text(
        json.dumps(generic), encoding="utf-8")
    problems = compatibility_problems(tmp_path)
    assert problems and all(p.endswith("(released as routing.incident.*): source_unit: type "
                                       "changed from ['integer'] to ['string']") for p in problems)
    assert len(problems) == len([m for m in snapshots(default_registry())
                                 if m.startswith("ioc.routing.incident-events/")])


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


def test_what_sync_province_writes_at_the_province_is_documented(document: dict[str, Any]) -> None:
    """The province's cluster: mirrored datasets (granted fields only, never personal ones),
    forwarded reports, the cursor and the signed checkpoints, on the `province` server."""
    province = {c["address"]: c for c in document["channels"].values()
                if c["servers"] == [{"$ref": "#/servers/province"}]}
    assert {"loc-ninh.ioc.data.phan-anh-hien-truong.v1", "loc-ninh.ioc.reporting.reports.v1",
            "loc-ninh.ioc.sync-province.cursor.v1",
            "loc-ninh.ioc.sync-province.checkpoints.v1"} <= set(province)
    assert all(c["address"].startswith("loc-ninh.") for c in province.values())
    mirrored = message(document, "loc-ninh.ioc.data.phan-anh-hien-truong.v1",
                       "ingest.record.accepted")
    record = mirrored["payload"]["properties"]["payload"]["properties"]["record"]
    assert not any(f.get("x-personal-data") for f in record["properties"].values())
    assert "ioc-origin-ioc" in mirrored["headers"]["properties"]
    assert "retention.ms" not in province["loc-ninh.ioc.data.phan-anh-hien-truong.v1"][
        "bindings"]["kafka"]["topicConfiguration"]   # the province broker's default
