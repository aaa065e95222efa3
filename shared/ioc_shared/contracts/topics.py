"""The topic catalogue: every topic is declared here with partitions and retention.

FastStream would silently create a missing topic with one partition, and the
local broker has `auto.create.topics.enable=false`; services call
`ioc_shared.platform.kafka.declare_topics` with these specs at start-up.
Keys: records and incidents are keyed by entity id, unit-addressed topics by
unit id, so that everything about one entity stays ordered in one partition.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    retention_ms: int
    compacted: bool = False
    key: str = "entity id"
    description: str = ""
    extra_config: dict[str, str] = field(default_factory=dict)

    def config(self) -> dict[str, str]:
        policy = "compact,delete" if self.compacted else "delete"
        return {
            "cleanup.policy": policy,
            "retention.ms": str(self.retention_ms),
            **self.extra_config,
        }


def _spec(name: str, partitions: int, days: int, key: str, description: str,
          compacted: bool = False) -> TopicSpec:
    return TopicSpec(name, partitions, days * DAY_MS, compacted, key, description)


# --- ingest -----------------------------------------------------------------
INGEST_INBOUND = _spec(
    "ioc.ingest.inbound.v1", 6, 7, "unit id",
    "Raw submissions from unit systems, signed with the unit's credentials.")
INGEST_REJECTED = _spec(
    "ioc.ingest.rejected.v1", 6, 90, "unit id",
    "IOC-internal (operators, reporting): every rejection of an authenticated input, with "
    "machine-readable reasons. Units read their own `ioc.ingest.rejections.<unit>.v1` instead.")
INGEST_UNAUTHENTICATED = _spec(
    "ioc.ingest.unauthenticated.v1", 3, 90, "delivery origin",
    "Operators only: rejections of inputs whose sender could not be verified (bad or "
    "missing signature or token, unknown principal); never addressed to the claimed unit.")
INGEST_QUARANTINE = _spec(
    "ioc.ingest.quarantine.v1", 3, 180, "unit id",
    "Raw bytes and headers of every rejected input, kept for replay after a fix.")
INGEST_FRESHNESS = _spec(
    "ioc.ingest.freshness.v1", 3, 400, "dataset id",
    "Lateness and recovery events per unit and dataset against the expected cadence.")
INGEST_QUALITY = _spec(
    "ioc.ingest.quality.v1", 3, 400, "unit id",
    "Periodic accepted/rejected counters per unit, dataset and reason.")

# --- routing ----------------------------------------------------------------
ROUTING_COMMANDS = _spec(
    "ioc.routing.commands.v1", 6, 30, "incident id",
    "Commands from units and operators (verify, approve, assign, acknowledge ...).")
ROUTING_COMMAND_RESULTS = _spec(
    "ioc.routing.command-results.v1", 6, 30, "acting unit id",
    "Accepted / rejected answer to every command, with the reason.")
ROUTING_EVENTS = _spec(
    "ioc.routing.incident-events.v1", 6, 400, "incident id",
    "Every incident state transition, from the transactional outbox.")
ROUTING_NOTIFICATIONS = _spec(
    "ioc.routing.notifications.v1", 6, 90, "recipient unit id",
    "Assignments, reminders and escalation steps with their recipients.")
ROUTING_REPORTER_UPDATES = _spec(
    "ioc.routing.reporter-updates.v1", 3, 90, "incident id",
    "Status updates and satisfaction survey requests for the original reporter.")
ROUTING_UNAUTHENTICATED_COMMANDS = _spec(
    "ioc.routing.unauthenticated-commands.v1", 3, 30, "origin topic:partition of the command",
    "Operators only: the answer to every command that failed authentication (missing or "
    "bad signature, unknown principal), with its origin and the principal it claimed; "
    "never addressed to a unit.")

# --- province mirror --------------------------------------------------------
SYNC_PROVINCE_STATUS = _spec(
    "ioc.sync-province.status.v1", 1, 90, "dataset id",
    "Progress of the mirror of shared datasets to the provincial IOC.")
# Topics sync-province keeps on the PROVINCE's cluster (not the district's, so not in
# TOPICS): names there get the district's prefix (`province_topic`). The cursor holds the
# district source positions written in the same transaction as the records (KIP-618).
SYNC_PROVINCE_CURSOR = TopicSpec(
    "ioc.sync-province.cursor.v1", 1, 3650 * DAY_MS, compacted=True,
    key="<target>|<source topic>|<partition>",
    description="Next district offset per source partition, written with the records.")
SYNC_PROVINCE_CHECKPOINTS = _spec(
    "ioc.sync-province.checkpoints.v1", 1, 3650, "district id",
    "Signed checkpoints (Ed25519) of the head of the district's share log.")


def province_topic(district: str, name: str) -> str:
    """The name a district topic gets on the province's cluster: `<district>.<name>`."""
    return f"{_part(district)}.{name}"

TOPICS: tuple[TopicSpec, ...] = (
    INGEST_INBOUND, INGEST_REJECTED, INGEST_UNAUTHENTICATED, INGEST_QUARANTINE, INGEST_FRESHNESS,
    INGEST_QUALITY,
    ROUTING_COMMANDS, ROUTING_COMMAND_RESULTS, ROUTING_EVENTS, ROUTING_NOTIFICATIONS,
    ROUTING_REPORTER_UPDATES, ROUTING_UNAUTHENTICATED_COMMANDS, SYNC_PROVINCE_STATUS,
)

# --- reporting (a block of its own, appended to TOPICS) ---------------------
REPORTING_COMMANDS = _spec(
    "ioc.reporting.commands.v1", 3, 30, "report period key",
    "Signed report commands: generate, submit, approve, issue, send, request thematic/ad-hoc.")
REPORTING_COMMAND_RESULTS = _spec(
    "ioc.reporting.command-results.v1", 3, 30, "acting unit id",
    "Accepted / rejected answer to every report command, with the Vietnamese reason.")
REPORTING_PUBLISHED = _spec(
    "ioc.reporting.reports.v1", 3, 3650, "report period key",
    "report.published: every generated report version with all its figures (versioned JSON).")
REPORTING_NOTIFICATIONS = _spec(
    "ioc.reporting.notifications.v1", 3, 90, "recipient unit id",
    "report.due-soon and report.overdue reminders to the IOC leader.")
REPORTING_UNAUTHENTICATED_COMMANDS = _spec(
    "ioc.reporting.unauthenticated-commands.v1", 3, 30, "origin topic:partition of the command",
    "Operators only: the answer to every report command that failed authentication, with "
    "its origin and the principal it claimed; never addressed to a unit.")
TOPICS += (REPORTING_COMMANDS, REPORTING_COMMAND_RESULTS, REPORTING_PUBLISHED,
           REPORTING_NOTIFICATIONS, REPORTING_UNAUTHENTICATED_COMMANDS)

_NAME_PART = re.compile(r"[^a-z0-9\-]")


def _part(value: str) -> str:
    """A topic-name segment: ASCII letters, digits and single hyphens."""
    folded = unicodedata.normalize("NFD", value.lower()).replace("đ", "d")
    folded = "".join(ch for ch in folded if unicodedata.category(ch) != "Mn")
    return re.sub(r"-{2,}", "-", _NAME_PART.sub("-", folded)).strip("-")


def canonical_topic(dataset_id: str, partitions: int = 6, retention_days: int = 400) -> TopicSpec:
    """Default-sharing topic of a dataset (Đ3.5): canonical records, keyed by
    `<source unit>/<record id>` (record ids are unique per unit only)."""
    return _spec(f"ioc.data.{_part(dataset_id)}.v1", partitions, retention_days,
                 "source unit / record id",
                 f"Canonical records of dataset {dataset_id}, without citizens' personal fields.")


def restricted_topic(dataset_id: str, partitions: int = 6, retention_days: int = 400) -> TopicSpec:
    """Citizens' personal fields of a dataset's records (not default-sharing): same key as
    the canonical record, read only by the services that need them."""
    return _spec(f"ioc.restricted.{_part(dataset_id)}.v1", partitions, retention_days,
                 "source unit / record id",
                 f"Restricted: personal fields of {dataset_id} records (ACL: named services only).")


def unit_rejections_topic(unit_id: str) -> TopicSpec:
    """A unit's own rejection feed: only rejections of inputs it was verified to send
    (ACL: the unit READ on its own feed only)."""
    return _spec(f"ioc.ingest.rejections.{_part(unit_id)}.v1", 1, 90, "unit id",
                 f"Rejections of authenticated inputs of unit {unit_id}, for that unit only.")


def special_topic(requester_unit: str, dataset_id: str, grant_id: str) -> TopicSpec:
    """Per-requester derived stream of a special-request grant (Đ3.6)."""
    return _spec(
        f"ioc.share.{_part(requester_unit)}.{_part(dataset_id)}.{_part(grant_id)}.v1",
        3, 90, "record id",
        f"Granted fields of {dataset_id} for {requester_unit} under grant {grant_id}.")
