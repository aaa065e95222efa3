"""The AsyncAPI 3.0 document of the bus, generated from the code, and its compatibility gate.

Channels are the topic catalogue (`topics.TOPICS`) plus the topics derived from each
dataset of the registry (`DATASET_CHANNELS`: canonical records, special-request
streams). Each channel lists its key, headers, partitions and retention, and each
message its JSON Schema: the envelope (`Envelope`) with the payload the topic
carries, built from the pydantic models and the registry's field definitions.

Extension points (a new topic, a new message):
- declare the topic in `topics.py` (`TOPICS`, or a factory per dataset added to
  `DATASET_CHANNELS` here);
- describe its messages in `TOPIC_MESSAGES` (topic name -> function of the registry
  returning `Message`s); the payload schema may come from the owning service as
  `"package.module:function"` (a function returning a JSON Schema of the payload);
- a topic without an entry is documented with the generic envelope.

`python -m ioc_shared.contracts docs/contracts` writes `asyncapi.yaml`;
`python -m ioc_shared.contracts.asyncapi release docs/contracts/released` snapshots
the message schemas a compatibility test compares every later change with.
"""

from __future__ import annotations

import copy
import importlib
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import BaseModel

from ioc_shared.contracts.envelope import Envelope
from ioc_shared.contracts.headers import (
    H_EVENT_ID,
    H_EVENT_TYPE,
    H_PRINCIPAL,
    H_PRODUCER,
    H_SIGNATURE,
)
from ioc_shared.contracts.topics import (
    INGEST_INBOUND,
    INGEST_QUARANTINE,
    REPORTING_COMMANDS,
    REPORTING_PUBLISHED,
    ROUTING_COMMANDS,
    SYNC_PROVINCE_CHECKPOINTS,
    SYNC_PROVINCE_CURSOR,
    TOPICS,
    TopicSpec,
    canonical_topic,
    province_topic,
    restricted_topic,
    special_topic,
    unit_rejections_topic,
)
from ioc_shared.registry import Dataset, FieldSpec, Registry, load_registry

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
REGENERATE = "make docs"  # i.e. python -m ioc_shared.contracts docs/contracts
RELEASE = "python -m ioc_shared.contracts.asyncapi release docs/contracts/released"
_VERSIONED = re.compile(r"^(?P<family>.+)\.v(?P<version>\d+)$")


@dataclass(frozen=True)
class Message:
    """One kind of Kafka value on a topic, with the JSON Schema of the whole value."""

    name: str                    # the envelope type, or a name for raw values
    title: str
    schema: dict[str, Any]
    schema_version: int = 1      # the envelope's `schema_version` (or the payload's)
    headers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Channel:
    spec: TopicSpec
    messages: tuple[Message, ...]
    headers: tuple[str, ...] = field(default=())
    # "local": the district's cluster; "province": topics sync-province keeps on the
    # provincial IOC's cluster (created there with that broker's default retention
    # unless the catalogue says otherwise: `retention_ms` 0).
    server: str = "local"


# --- headers -------------------------------------------------------------------------
HEADERS: dict[str, str] = {
    "traceparent": "W3C trace context of the step that produced the message.",
    "tracestate": "W3C trace state, when the sender had one.",
    H_EVENT_ID: "The envelope's event id: deduplicate by it.",
    H_EVENT_TYPE: "The envelope's type, readable without parsing the value.",
    H_PRINCIPAL: "Principal id of the sender (registry), verified by the signature.",
    H_SIGNATURE: "Lowercase hex HMAC-SHA256 of the exact value bytes with the principal's secret.",
    H_PRODUCER: "The IOC service that produced the message (ingest, routing, reporting, "
                "sync-province); "
                "consumers of canonical records and incident events check it.",
    "ioc-dataset": "Dataset id of the record.",
    "ioc-quarantine-code": "Rejection code of the quarantined input.",
    "ioc-quarantine-unit": "Unit the input came from, when it could be told.",
    "ioc-quarantine-dataset": "Dataset the input named, when it could be read.",
    "ioc-quarantine-origin": "Where the input came from (topic/partition/offset or HTTP request id).",
    "ioc-quarantine-event-id": "Event id of the rejection answered for this input.",
    "ioc-quarantine-at": "When it was quarantined (UTC, ISO 8601).",
    "ioc-origin-ioc": "The district IOC a mirrored record comes from.",
    "ioc-origin-topic": "The district topic it was read from (without namespace).",
    "ioc-origin-partition": "Its partition there.",
    "ioc-origin-offset": "Its offset there.",
    "ioc-grant-ids": "The grants that let a mirrored dataset record leave, comma-separated.",
}
ENVELOPE_HEADERS = ("traceparent", "tracestate", H_EVENT_ID, H_EVENT_TYPE)
PRODUCED_HEADERS = (*ENVELOPE_HEADERS, H_PRODUCER)   # by every IOC service
MIRRORED_HEADERS = (*ENVELOPE_HEADERS, "ioc-dataset")  # kept by sync-province, plus its own
SIGNED_HEADERS = ("traceparent", "tracestate", H_PRINCIPAL, H_SIGNATURE)
QUARANTINE_HEADERS = (*SIGNED_HEADERS, "ioc-quarantine-code", "ioc-quarantine-unit",
                      "ioc-quarantine-dataset", "ioc-quarantine-origin", "ioc-quarantine-event-id",
                      "ioc-quarantine-at")


def headers_schema(names: Iterable[str]) -> dict[str, Any]:
    return {"type": "object", "properties": {n: {"type": "string", "description": HEADERS[n]}
                                             for n in names}}


# --- message schemas -------------------------------------------------------------------
def envelope_message(event_type: str, title: str, payload: dict[str, Any] | None = None, *,
                     schema_version: int = 1, headers: tuple[str, ...] = ENVELOPE_HEADERS) -> Message:
    """The envelope with `type` fixed (or a family: `routing.incident.*`) and `payload`
    described (any object when None)."""
    schema = copy.deepcopy(Envelope.model_json_schema())
    schema["title"] = event_type
    if event_type.endswith(".*"):
        prefix = re.escape(event_type[:-1])
        schema["properties"]["type"] = {"type": "string", "pattern": f"^{prefix}[a-z0-9_.\\-]+$",
                                        "title": "Type"}
    elif event_type != "*":
        schema["properties"]["type"] = {"const": event_type, "type": "string", "title": "Type"}
    if payload is not None:
        schema["properties"]["payload"] = payload
    return Message(event_type, title, schema, schema_version, headers)


def _external(reference: str) -> dict[str, Any]:
    """A schema a service's package publishes, named `package.module:function`."""
    module, _, name = reference.partition(":")
    target: Any = importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    schema: dict[str, Any] = target()
    return schema


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    """`schema` with its `$ref`s to `defs` replaced by what they name (the models are not
    recursive), so the compatibility gate compares nested fields too."""
    if isinstance(schema, list):
        return [_inline(item, defs) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return {k: _inline(v, defs) for k, v in schema.items()
            if k != "$defs" and not (k == "additionalProperties" and v is False)}


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """JSON Schema of a payload model, self-contained and open: the models forbid unknown
    fields to catch drift in the tests, but a consumer must ignore fields it does not
    know (optional fields are added without a new version)."""
    raw = model.model_json_schema()
    schema: dict[str, Any] = _inline(raw, raw.get("$defs", {}))
    return schema


def service_messages(reference: str, topic: str, *,
                     headers: tuple[str, ...] = PRODUCED_HEADERS) -> list[Message]:
    """A message per event type from a service's `MESSAGES` (topic -> type -> model),
    named `package.module` (its `contract` module)."""
    models: dict[str, type[BaseModel]] = importlib.import_module(reference).MESSAGES[topic]
    return [envelope_message(event_type, (model.__doc__ or event_type).strip().split("\n")[0],
                             model_schema(model), headers=headers)
            for event_type, model in models.items()]


def _field_schema(spec: FieldSpec) -> dict[str, Any]:
    """JSON of a canonical field, as ingest writes it (`ingest.domain.normalize`)."""
    kind = spec.type
    out: dict[str, Any]
    if kind in ("string", "text"):
        out = {"type": "string"}
        if spec.max_length:
            out["maxLength"] = spec.max_length
    elif kind in ("integer", "decimal"):
        out = {"type": "integer" if kind == "integer" else "number"}
        if spec.min is not None:
            out["minimum"] = spec.min
        if spec.max is not None:
            out["maximum"] = spec.max
    elif kind == "boolean":
        out = {"type": "boolean"}
    elif kind == "date":
        out = {"type": "string", "format": "date"}
    elif kind == "datetime":
        out = {"type": "string", "format": "date-time", "description": "UTC"}
    elif kind == "enum":
        out = {"type": "string", "enum": list(spec.values)}
    elif kind == "phone":
        out = {"type": "string", "description": "E.164"}
    elif kind == "email":
        out = {"type": "string", "format": "email"}
    elif kind in ("commune", "unit"):
        out = {"type": "string", "description": f"{kind} id of the registry"}
    else:  # geo
        out = {"type": "object", "required": ["lat", "lon"],
               "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}}}
    if spec.description:
        out["description"] = spec.description
    if spec.personal:
        out["x-personal-data"] = True
    return out


REPORTER_REF = "reporter_ref"   # ingest's pseudonym of the person behind the personal fields


def record_schema(dataset: Dataset, only: Iterable[str] | None = None, *,
                  personal: bool | None = None) -> dict[str, Any]:
    """The dataset's canonical record (its `canonical_version`) from the registry's fields.

    `only`: just these fields (a grant's). `personal`: False for the default-sharing
    record, whose personal fields ingest moves to the restricted topic and replaces with
    the pseudonym `reporter_ref`; True for those fields alone; None for all fields.
    """
    version = dataset.schema_for(dataset.canonical_version)
    fields = dict(version.fields) if version is not None else {}
    if only is not None:
        allowed = set(only)
        fields = {k: v for k, v in fields.items() if k in allowed}
    had_personal = any(v.personal for v in fields.values())
    if personal is not None:
        fields = {k: v for k, v in fields.items() if v.personal == personal}
    properties = {k: _field_schema(v) for k, v in fields.items()}
    if personal is False and had_personal:
        properties[REPORTER_REF] = {
            "type": "string", "pattern": "^r-[0-9a-f]{32}$",
            "description": "Pseudonym of the person behind the record's personal fields (keyed "
                           "HMAC): same person, unit and dataset, same reference. Present when "
                           "the record had personal fields."}
    return {"type": "object", "title": f"{dataset.id} v{dataset.canonical_version}",
            "required": sorted(k for k, v in fields.items() if v.required),
            "properties": properties}


def _object(properties: dict[str, Any], required: Iterable[str]) -> dict[str, Any]:
    return {"type": "object", "required": sorted(required), "properties": properties}


_STRING = {"type": "string"}
_NULLABLE_STRING = {"type": ["string", "null"]}


def accepted_message(dataset: Dataset) -> Message:
    payload = _object({
        "dataset": {"const": dataset.id, "type": "string"},
        "schema_version": {"const": dataset.canonical_version, "type": "integer"},
        "source_schema_version": {"type": "integer", "description": "version the unit sent"},
        "record_id": _STRING,
        "record": record_schema(dataset, personal=False),
        "client_event_id": _NULLABLE_STRING,
        "provenance": _object({"principal": _STRING, "channel": _STRING, "origin": _STRING,
                               "content_hash": _STRING}, ["principal", "channel", "origin"]),
    }, ["dataset", "schema_version", "record_id", "record", "provenance"])
    return envelope_message("ingest.record.accepted", f"Accepted record of {dataset.name}", payload,
                            schema_version=dataset.canonical_version,
                            headers=(*PRODUCED_HEADERS, "ioc-dataset"))


def personal_message(dataset: Dataset) -> Message:
    """`<dataset>.personal` on the restricted topic: the fields the canonical record left out."""
    payload = model_schema(_ingest_model("PersonalFields"))
    payload["properties"]["fields"] = record_schema(dataset, personal=True)
    return envelope_message(f"{dataset.id}.personal", f"Personal fields of {dataset.name} records",
                            payload, headers=(*PRODUCED_HEADERS, "ioc-dataset"))


def _ingest_model(name: str) -> type[BaseModel]:
    model: type[BaseModel] = getattr(importlib.import_module("ingest.contract"), name)
    return model


def shared_message(dataset: Dataset, fields: Iterable[str]) -> Message:
    payload = _object({
        "dataset": {"const": dataset.id, "type": "string"},
        "schema_version": {"const": dataset.canonical_version, "type": "integer"},
        "record_id": _STRING,
        "record": record_schema(dataset, fields),
        "grant_id": _STRING, "requester": _STRING, "purpose": _STRING,
        "expires_at": {"type": ["string", "null"], "format": "date-time"},
    }, ["dataset", "schema_version", "record_id", "record", "grant_id", "requester"])
    return envelope_message("ingest.record.shared", f"Granted fields of {dataset.name}", payload,
                            schema_version=dataset.canonical_version,
                            headers=(*PRODUCED_HEADERS, "ioc-dataset"))


def _submission(_: Registry) -> list[Message]:
    return [Message("ingest.submission", "A unit system's submission (raw, signed)",
                    _external("ingest.contract:submission_json_schema"), 1, SIGNED_HEADERS)]


def _quarantined(_: Registry) -> list[Message]:
    return [Message("ingest.quarantined", "The exact bytes of a rejected input",
                    {"description": "The value exactly as received (any bytes); the original "
                                    "headers follow, with the quarantine marks."},
                    1, QUARANTINE_HEADERS)]


def _commands(_: Registry) -> list[Message]:
    return service_messages("routing.contract", ROUTING_COMMANDS.name, headers=SIGNED_HEADERS)


def _report_commands(_: Registry) -> list[Message]:
    payload = _external("reporting.domain.lifecycle:_Payload.model_json_schema")
    verbs = importlib.import_module("reporting.domain.lifecycle").Verb
    return [envelope_message(f"reporting.command.{verb.value}", f"Report command: {verb.value}",
                             payload, headers=SIGNED_HEADERS) for verb in verbs]


# Messages of each topic of the catalogue, by the topic's name. Extend here; a topic
# without an entry falls back to the owner's `MESSAGES` (OWNERS), else to a generic envelope.
TOPIC_MESSAGES: dict[str, Callable[[Registry], list[Message]]] = {
    INGEST_INBOUND.name: _submission,
    INGEST_QUARANTINE.name: _quarantined,
    ROUTING_COMMANDS.name: _commands,
    REPORTING_COMMANDS.name: _report_commands,
    REPORTING_PUBLISHED.name: lambda _: [envelope_message(
        "report.published", "A report version with every figure (ioc.reporting.report/1)",
        _external("reporting.contract:published_json_schema"), headers=PRODUCED_HEADERS)],
}
# The contract module of each service, whose `MESSAGES` maps its topics to event types
# and their payload models.
OWNERS = ("ingest.contract", "routing.contract", "reporting.contract", "sync_province.contract")
# Headers beyond the envelope's and the producer's, by topic.
EXTRA_HEADERS = {"ioc.ingest.rejected.v1": ("ioc-dataset",),
                 "ioc.ingest.unauthenticated.v1": ("ioc-dataset",)}


def _owned(topic: str) -> list[Message] | None:
    for reference in OWNERS:
        if topic in importlib.import_module(reference).MESSAGES:
            return service_messages(reference, topic,
                                    headers=(*PRODUCED_HEADERS, *EXTRA_HEADERS.get(topic, ())))
    return None


def _channel(spec: TopicSpec, messages: list[Message], server: str = "local") -> Channel:
    return Channel(spec, tuple(messages), tuple(dict.fromkeys(h for m in messages for h in m.headers)),
                   server)


def _canonical_channels(registry: Registry) -> list[Channel]:
    return [_channel(canonical_topic(ds.id), [accepted_message(ds)])
            for _, ds in sorted(registry.datasets.items())]


def _restricted_channels(registry: Registry) -> list[Channel]:
    return [_channel(restricted_topic(ds.id), [personal_message(ds)])
            for _, ds in sorted(registry.datasets.items()) if registry.personal_fields(ds.id)]


def _special_channels(registry: Registry) -> list[Channel]:
    out = []
    for grant in sorted(registry.special_grants(), key=lambda g: g.id):
        dataset = registry.datasets[grant.dataset]
        out.append(_channel(special_topic(grant.unit, grant.dataset, grant.id),
                            [shared_message(dataset, grant.fields or ())]))
    return out


def _unit_rejection_channels(registry: Registry) -> list[Channel]:
    """Each unit that can authenticate has its own rejection feed (ingest.topics)."""
    rejection = service_messages("ingest.contract", "ioc.ingest.rejected.v1",
                                 headers=(*PRODUCED_HEADERS, "ioc-dataset"))
    return [_channel(unit_rejections_topic(unit), rejection)
            for unit in sorted({p.unit for p in registry.principals.values()})]


def _province_channels(registry: Registry) -> list[Channel]:
    """What sync-province writes on the province's cluster: each dataset shared with the
    province (its granted fields only), the forwarded event topics as they are, the cursor
    and the signed checkpoints."""
    from ioc_shared.grants import fields_of_grant
    from ioc_shared.registry import Action

    sync = importlib.import_module("sync_province.contract")
    prefix, principal, event_topics = sync.province_defaults()
    mirrored = (*MIRRORED_HEADERS, *sync.ORIGIN_HEADERS)
    holder = registry.principals.get(principal)
    out = []
    for _, ds in sorted(registry.datasets.items()):
        grants = [g for g in registry.grants if holder is not None and g.unit == holder.unit
                  and g.dataset == ds.id and (Action.READ in g.actions or Action.RECEIVE in g.actions)]
        if not ds.shared_with_province or not grants:
            continue
        fields = sorted(set().union(*(fields_of_grant(g, ds) for g in grants)))
        source = canonical_topic(ds.id)
        payload = _object({
            "dataset": {"const": ds.id, "type": "string"},
            "schema_version": {"const": ds.canonical_version, "type": "integer"},
            "record_id": _STRING,
            "record": record_schema(ds, fields),
        }, ["dataset", "schema_version", "record_id", "record"])
        message = envelope_message("ingest.record.accepted",
                                   f"A {ds.name} record as mirrored: granted fields only", payload,
                                   schema_version=ds.canonical_version, headers=mirrored)
        spec = TopicSpec(province_topic(prefix, source.name), source.partitions, 0, key=source.key,
                         description=f"Province's cluster: {ds.id} records the district shares "
                                     "(the province's grants decide the fields).")
        out.append(_channel(spec, [message], "province"))
    for name in event_topics:
        source = next(t for t in TOPICS if t.name == name)
        found = (TOPIC_MESSAGES[name](registry) if name in TOPIC_MESSAGES else _owned(name)) or []
        messages = [Message(m.name, m.title, m.schema, m.schema_version, mirrored) for m in found]
        spec = TopicSpec(province_topic(prefix, name), source.partitions, 0, key=source.key,
                         description=f"Province's cluster: {name} forwarded as it is.")
        out.append(_channel(spec, messages, "province"))
    for own in (SYNC_PROVINCE_CURSOR, SYNC_PROVINCE_CHECKPOINTS):
        model = sync.PROVINCE_MESSAGES[own.name]
        doc = (model.__doc__ or own.name).strip().split("\n")[0]
        spec = TopicSpec(province_topic(prefix, own.name), own.partitions, own.retention_ms,
                         own.compacted, own.key, own.description)
        out.append(_channel(spec, [Message(own.name.removesuffix(".v1"), doc,
                                           model_schema(model))], "province"))
    return out


# Topics derived from the registry, one factory per kind. Extend here.
DATASET_CHANNELS: list[Callable[[Registry], list[Channel]]] = [
    _canonical_channels, _restricted_channels, _special_channels, _unit_rejection_channels,
    _province_channels]


def channels(registry: Registry) -> list[Channel]:
    fixed = []
    for spec in TOPICS:
        listed = TOPIC_MESSAGES.get(spec.name)
        found = (listed(registry) if listed else _owned(spec.name)) or [
            envelope_message("*", spec.description)]
        fixed.append(_channel(spec, found))
    return fixed + [c for factory in DATASET_CHANNELS for c in factory(registry)]


# --- the document ----------------------------------------------------------------------
def _channel_id(name: str) -> str:
    return name.replace(".", "-")


def _message_id(channel: Channel, message: Message) -> str:
    return f"{_channel_id(channel.spec.name)}--{message.name.replace('*', 'any')}"


def asyncapi_document(registry: Registry) -> dict[str, Any]:
    doc_channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    inward = {INGEST_INBOUND.name, ROUTING_COMMANDS.name, REPORTING_COMMANDS.name}
    for channel in channels(registry):
        spec = channel.spec
        cid = _channel_id(spec.name)
        refs = {}
        for m in channel.messages:
            mid = _message_id(channel, m)
            refs[m.name] = {"$ref": f"#/components/messages/{mid}"}
            messages[mid] = {
                "name": m.name, "title": m.title, "contentType": "application/json",
                "headers": headers_schema(m.headers), "payload": m.schema,
                "bindings": {"kafka": {"key": {"type": "string", "description": spec.key},
                                       "bindingVersion": KAFKA_BINDING_VERSION}},
                "x-schema-version": m.schema_version,
            }
        config = spec.config()
        topic_config: dict[str, Any] = {"cleanup.policy": config["cleanup.policy"].split(",")}
        if spec.retention_ms > 0:
            topic_config["retention.ms"] = spec.retention_ms
        doc_channels[cid] = {
            "address": spec.name, "description": spec.description, "messages": refs,
            "servers": [{"$ref": f"#/servers/{channel.server}"}],
            "bindings": {"kafka": {
                "topic": spec.name, "partitions": spec.partitions,
                "topicConfiguration": topic_config,
                "bindingVersion": KAFKA_BINDING_VERSION}},
            "x-key": spec.key,
        }
        action = "receive" if spec.name in inward else "send"
        operations[f"{action}-{cid}"] = {
            "action": action, "channel": {"$ref": f"#/channels/{cid}"},
            "summary": ("The IOC consumes what units and operators send here."
                        if action == "receive" else "The IOC publishes here; downstream teams subscribe."),
            "messages": [{"$ref": f"#/channels/{cid}/messages/{name}"} for name in refs],
        }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "IOC event backbone — Lộc Ninh",
            "version": "1.0.0",
            "description": (f"Generated by `{REGENERATE}` (python -m ioc_shared.contracts "
                            "docs/contracts) from shared/ioc_shared/contracts "
                            "and config/registry.yaml; do not edit by hand. How to subscribe: "
                            "docs/consumers.md."),
        },
        "defaultContentType": "application/json",
        "servers": {"local": {"host": "127.0.0.1:19092", "protocol": "kafka",
                              "description": "The district's broker (development: "
                                             "scripts/platform.sh)."},
                    "province": {"host": "127.0.0.1:19094", "protocol": "kafka-secure",
                                 "description": "The provincial IOC's cluster (SASL_SSL), "
                                                "written by sync-province only (development: "
                                                "scripts/platform.sh)."}},
        "channels": doc_channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def asyncapi_yaml(registry: Registry | None = None) -> str:
    registry = registry or default_registry()
    return yaml.safe_dump(asyncapi_document(registry), sort_keys=False, allow_unicode=True, width=100)


def default_registry() -> Registry:
    from ioc_shared.platform.settings import REPO_ROOT

    return load_registry(REPO_ROOT / "config" / "registry.yaml")


# --- released snapshots and the compatibility gate ----------------------------------------
def family(topic: str) -> tuple[str, int]:
    """`ioc.routing.commands.v1` -> (`ioc.routing.commands`, 1)."""
    found = _VERSIONED.match(topic)
    return (found["family"], int(found["version"])) if found else (topic, 0)


def snapshot_path(topic: str, message: str) -> str:
    return f"{family(topic)[0]}/{message.replace('*', 'any')}.json"


def snapshots(registry: Registry) -> dict[str, dict[str, Any]]:
    """Every message's schema as the release snapshot stores it, by relative path."""
    return {snapshot_path(c.spec.name, m.name): {"topic": c.spec.name, "message": m.name,
                                                 "schema_version": m.schema_version, "schema": m.schema}
            for c in channels(registry) for m in c.messages}


def write_release(directory: Path, registry: Registry | None = None) -> list[str]:
    written = []
    for relative, snapshot in snapshots(registry or default_registry()).items():
        path = directory / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(snapshot, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(relative)
    return written


def _types(schema: dict[str, Any]) -> frozenset[str] | None:
    """The JSON types a schema allows (None: any, or not said)."""
    if "const" in schema and "type" not in schema:
        return frozenset({type(schema["const"]).__name__})
    if "type" in schema:
        kind = schema["type"]
        return frozenset(kind if isinstance(kind, list) else [kind])
    members = schema.get("anyOf") or schema.get("oneOf")
    if members:
        found: set[str] = set()
        for m in members:
            each = _types(m)
            if each is None:
                return None
            found |= each
        return frozenset(found)
    return None


def _object_member(schema: dict[str, Any]) -> dict[str, Any] | None:
    if "properties" in schema:
        return schema
    for m in schema.get("anyOf") or schema.get("oneOf") or ():
        if "properties" in m:
            return dict(m)
    return None


def breaking_changes(old: dict[str, Any], new: dict[str, Any], path: str = "") -> list[str]:
    """What in `new` would break a consumer (or a producer) written against `old`:
    a removed field, a changed type or constant, a field that became required."""
    where = path or "(value)"
    problems: list[str] = []
    old_types, new_types = _types(old), _types(new)
    if old_types is not None and new_types != old_types:
        shown = sorted(new_types) if new_types is not None else "any"
        problems.append(f"{where}: type changed from {sorted(old_types)} to {shown}")
        return problems
    if "const" in old and old.get("const") != new.get("const"):
        problems.append(f"{where}: constant changed from {old['const']!r} to {new.get('const')!r}")
    old_obj, new_obj = _object_member(old), _object_member(new)
    if old_obj is not None:
        new_props = (new_obj or {}).get("properties", {})
        for name, schema in old_obj.get("properties", {}).items():
            sub = f"{path}.{name}" if path else name
            if name not in new_props:
                problems.append(f"{sub}: field removed")
            else:
                problems += breaking_changes(schema, new_props[name], sub)
        added = set((new_obj or {}).get("required", ())) - set(old_obj.get("required", ()))
        problems += [f"{path + '.' if path else ''}{name}: field became required"
                     for name in sorted(added)]
    old_items, new_items = _array_items(old), _array_items(new)
    if old_items is not None and new_items is not None:
        problems += breaking_changes(old_items, new_items, f"{path}[]")
    return problems


def _array_items(schema: dict[str, Any]) -> dict[str, Any] | None:
    """The items of an array schema, also of a nullable one (`anyOf: [array, null]`)."""
    if isinstance(schema.get("items"), dict):
        found: dict[str, Any] = schema["items"]
        return found
    for m in schema.get("anyOf") or schema.get("oneOf") or ():
        if isinstance(m, dict) and isinstance(m.get("items"), dict):
            return dict(m["items"])
    return None


def _refinements(old: dict[str, Any], current: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The current messages of `old`'s topic a generic released message (`x.*`, `*`) covers."""
    name = old["message"]
    if not (name == "*" or name.endswith(".*")):
        return []
    prefix = name[:-1]
    return sorted((m for m in current if m["topic"] == old["topic"] and m["message"] != name
                   and m["message"].startswith(prefix)), key=lambda m: str(m["message"]))


def compatibility_problems(released_dir: Path, registry: Registry | None = None) -> list[str]:
    """Breaking changes against the last release that came without a new version.

    A message may change in any way under a new topic version (`.v2`) or a new schema
    version; otherwise only compatibly (fields added as optional, types kept).
    """
    current = snapshots(registry or default_registry())
    problems = []
    released = {p.relative_to(released_dir).as_posix(): json.loads(p.read_text(encoding="utf-8"))
                for p in sorted(released_dir.rglob("*.json"))}
    families = {family(s["topic"]) for s in current.values()}
    for relative, old in released.items():
        new = current.get(relative)
        refined = _refinements(old, current.values())
        if new is None and refined:
            # A family released as one generic message (`routing.incident.*`), now one
            # message per type: each must still be what the generic one promised.
            for each in refined:
                problems += [f"{old['topic']} {each['message']} (released as {old['message']}): {p}"
                             for p in breaking_changes(old["schema"], each["schema"])]
            continue
        if new is None:
            name, version = family(old["topic"])
            if not any(f == name and v > version for f, v in families):
                problems.append(f"{old['topic']} {old['message']}: released message no longer "
                                "documented (consumers may still expect it); publish it under a new "
                                "topic version or keep it")
            continue
        if new["topic"] != old["topic"] or new["schema_version"] != old["schema_version"]:
            continue  # a new version: consumers opt in
        problems += [f"{old['topic']} {old['message']} v{old['schema_version']}: {p}"
                     for p in breaking_changes(old["schema"], new["schema"])]
    return problems


cli = typer.Typer(add_completion=False, help="AsyncAPI document and released schema snapshots.")


@cli.command()
def release(out: Annotated[Path, typer.Argument()] = Path("docs/contracts/released")) -> None:
    """Snapshot the current message schemas as released (after a deliberate version bump)."""
    written = write_release(out)
    typer.echo(f"{len(written)} message schemas released to {out}")


@cli.command("print")
def print_document() -> None:
    """Print the AsyncAPI document."""
    typer.echo(asyncapi_yaml(), nl=False)


if __name__ == "__main__":
    cli()
