"""`ioc trace`: one trace's spans from an OTLP/JSON lines file, as a tree."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.tree import Tree

from ioc_cli.errors import OperatorError

# Attributes worth showing (where a message was, which event it was), with their short names.
SHOWN_ATTRIBUTES = {
    "messaging.destination.name": "topic", "messaging.destination_publish.name": "topic",
    "messaging.kafka.destination.partition": "partition",
    "messaging.kafka.message.offset": "offset", "messaging.kafka.offset": "offset",
    "messaging.message.id": "message_id", "ioc.event_id": "event_id", "ioc.origin": "origin",
    "db.collection.name": "table", "db.query.text": "query",
}
_STATUS = {0: "unset", 1: "ok", 2: "error"}


@dataclass
class SpanNode:
    service: str
    name: str
    span_id: str
    parent_id: str | None
    start_ns: int
    end_ns: int
    status: str
    status_message: str
    attributes: dict[str, Any]
    children: list[SpanNode] = field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "name": self.name, "span_id": self.span_id,
                "parent_span_id": self.parent_id, "start_unix_nano": self.start_ns,
                "duration_ms": round(self.duration_ms, 3), "status": self.status,
                "status_message": self.status_message, "attributes": self.attributes,
                "children": [c.to_json() for c in self.children]}


def _value(v: dict[str, Any]) -> Any:
    for kind in ("stringValue", "boolValue", "doubleValue"):
        if kind in v:
            return v[kind]
    if "intValue" in v:
        return int(v["intValue"])
    if "arrayValue" in v:
        return [_value(x) for x in v["arrayValue"].get("values", [])]
    return None


def _attributes(items: list[dict[str, Any]] | None) -> dict[str, Any]:
    return {a["key"]: _value(a.get("value", {})) for a in items or ()}


def read_spans(path: Path, trace_id: str) -> list[SpanNode]:
    """Every span of `trace_id` in the file (lines that do not parse are skipped)."""
    if not path.is_file():
        raise OperatorError("no traces file", where=str(path),
                            hint="run the services with IOC_TRACES_FILE set to it, or pass --file")
    wanted = trace_id.lower().replace("-", "")
    spans = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if wanted not in line:  # cheap: ids are hex in the line
                continue
            try:
                request = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash mid-write
            for resource in request.get("resourceSpans", ()):
                service = _attributes(resource.get("resource", {}).get("attributes")).get(
                    "service.name", "?")
                for scope in resource.get("scopeSpans", ()):
                    for s in scope.get("spans", ()):
                        if s.get("traceId") != wanted:
                            continue
                        status = s.get("status", {})
                        spans.append(SpanNode(
                            service, s.get("name", ""), s.get("spanId", ""),
                            s.get("parentSpanId") or None, int(s.get("startTimeUnixNano", 0)),
                            int(s.get("endTimeUnixNano", 0)), _STATUS.get(status.get("code", 0), "?"),
                            status.get("message", ""), _attributes(s.get("attributes"))))
    return spans


def build_tree(spans: list[SpanNode]) -> list[SpanNode]:
    """Roots (spans whose parent is not in the file: the sender's, or none), children by time."""
    by_id = {s.span_id: s for s in spans}
    roots: list[SpanNode] = []
    for span in sorted(spans, key=lambda s: s.start_ns):
        parent = by_id.get(span.parent_id or "")
        (parent.children if parent is not None and parent is not span else roots).append(span)
    return roots


def label(span: SpanNode) -> str:
    shown = "  ".join(f"{short}={escape(_short(str(span.attributes[k])))}"
                      for k, short in SHOWN_ATTRIBUTES.items() if k in span.attributes)
    status = ""
    if span.status == "error":
        status = f" [bold red]ERROR[/] {escape(span.status_message)}"
    return (f"[cyan]{escape(span.service)}[/] [bold]{escape(span.name)}[/] {span.duration_ms:.1f} ms"
            f"{status}" + (f"  [dim]{shown}[/]" if shown else ""))


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def render(trace_id: str, roots: list[SpanNode]) -> Tree:
    tree = Tree(f"trace {trace_id}")

    def add(branch: Tree, node: SpanNode) -> None:
        child = branch.add(label(node))
        for c in node.children:
            add(child, c)

    for root in roots:
        add(tree, root)
    return tree
