"""Records sent to the province, from sync-province's status snapshots (pure).

A `sync-province.status` event is a snapshot per stream (a dataset, or an event topic)
and target: counters since that process started (`sent`, `parked`, `skipped` by reason;
the target's `failures` by reason, repeated in every stream's snapshot), the source
positions reached and the last sync time. Counts are the differences between consecutive
snapshots of one (target, stream), put on the local day of the later one:

- a counter that went down means the process restarted: every counter of that snapshot
  then counts from zero (what the old process sent after its last snapshot is not known
  and is not guessed);
- records sent can never exceed how far the source positions moved past their highest
  value seen so far, so two processes or a replayed snapshot cannot count twice;
- a snapshot not newer than the last one applied changes nothing;
- the target's failures are kept once per target (stream ""), not once per stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from reporting.domain.incidents import local_day

STATUS_TYPE = "sync-province.status"
TARGET_STREAM = ""        # the baseline of a target's own counters (failures)


class StatusError(ValueError):
    pass


@dataclass(frozen=True)
class Snapshot:
    occurred_at: datetime
    target: str
    stream: str
    counters: dict[str, int]            # sent, parked, skipped:<reason>
    failures: dict[str, int]            # the target's, by reason
    positions: dict[str, int]           # "<topic>:<partition>" -> next offset
    last_synced_at: datetime | None


@dataclass
class Baseline:
    occurred_at: datetime
    counters: dict[str, int] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)     # highest seen per partition


@dataclass
class DayDelta:
    sent: int = 0
    parked: int = 0
    last_synced_at: datetime | None = None


def _counts(value: Any, what: str) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise StatusError(f"{what} is not an object")
    out = {}
    for k, v in value.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise StatusError(f"{what}.{k} is not a count")
        out[str(k)] = v
    return out


def snapshot_of(payload: dict[str, Any], occurred_at: datetime) -> Snapshot:
    """The snapshot in a status event's payload (StatusError when it is not one)."""
    target, stream = payload.get("target"), payload.get("stream")
    if not isinstance(target, str) or not target or not isinstance(stream, str) or not stream:
        raise StatusError("target or stream missing")
    counters = _counts({"sent": payload.get("sent", 0), "parked": payload.get("parked", 0)},
                       "counters")
    counters |= {f"skipped:{k}": n for k, n in _counts(payload.get("skipped"), "skipped").items()}
    synced = payload.get("last_synced_at")
    if synced is not None and (isinstance(synced, bool) or not isinstance(synced, int | float)):
        raise StatusError("last_synced_at is not a time")
    return Snapshot(occurred_at, target, stream, counters,
                    _counts(payload.get("failures"), "failures"),
                    _counts(payload.get("positions"), "positions"),
                    datetime.fromtimestamp(synced, UTC) if synced is not None else None)


def counter_deltas(previous: dict[str, int] | None, current: dict[str, int]) -> dict[str, int]:
    """What happened between two snapshots of counters kept since a process started."""
    if previous is None or any(current.get(k, 0) < n for k, n in previous.items()):
        return {k: n for k, n in current.items() if n}      # first seen, or restarted
    return {k: n - previous.get(k, 0) for k, n in current.items() if n - previous.get(k, 0)}


def advance(highest: dict[str, int], positions: dict[str, int]) -> tuple[int | None, dict[str, int]]:
    """How far `positions` moved past the highest seen (None: nothing to compare with)
    and the new highest positions."""
    moved = sum(max(0, n - highest[k]) for k, n in positions.items() if k in highest)
    comparable = bool(highest) and any(k in highest for k in positions)
    return (moved if comparable else None), {**highest, **{
        k: max(n, highest.get(k, n)) for k, n in positions.items()}}


def apply_stream(baseline: Baseline | None, snap: Snapshot
                 ) -> tuple[Baseline | None, tuple[date, DayDelta] | None]:
    """The (target, stream) baseline after `snap`, and what it adds to its local day
    (None, None: older than what was applied, nothing changes)."""
    if baseline is not None and snap.occurred_at <= baseline.occurred_at:
        return None, None
    deltas = counter_deltas(baseline.counters if baseline else None, snap.counters)
    moved, highest = advance(baseline.positions if baseline else {}, snap.positions)
    sent = deltas.get("sent", 0)
    if moved is not None:
        sent = min(sent, moved)
    return (Baseline(snap.occurred_at, dict(snap.counters), highest),
            (local_day(snap.occurred_at),
             DayDelta(sent, deltas.get("parked", 0), snap.last_synced_at)))


def apply_target(baseline: Baseline | None, snap: Snapshot
                 ) -> tuple[Baseline | None, tuple[date, dict[str, int]] | None]:
    """The target's failure baseline after `snap`, and the failures it adds to its day."""
    if baseline is not None and snap.occurred_at <= baseline.occurred_at:
        return None, None
    deltas = counter_deltas(baseline.counters if baseline else None, snap.failures)
    return Baseline(snap.occurred_at, dict(snap.failures)), (local_day(snap.occurred_at), deltas)


@dataclass
class Rollup:
    """The changes of one batch of snapshots: new baselines and day deltas."""

    baselines: dict[tuple[str, str], Baseline] = field(default_factory=dict)
    days: dict[tuple[date, str, str], DayDelta] = field(default_factory=dict)
    failures: dict[tuple[date, str, str], int] = field(default_factory=dict)   # day, target, reason


def fold(stored: dict[tuple[str, str], Baseline], snapshots: list[Snapshot]) -> Rollup:
    """Apply `snapshots` (any order: they are applied by occurrence time) over the
    `stored` baselines (keyed by (target, stream), stream "" for a target)."""
    out = Rollup()
    current = dict(stored)
    for snap in sorted(snapshots, key=lambda s: (s.occurred_at, s.target, s.stream)):
        key = (snap.target, snap.stream)
        base, day = apply_stream(current.get(key), snap)
        if base is not None and day is not None:
            current[key] = out.baselines[key] = base
            d = out.days.setdefault((day[0], snap.target, snap.stream), DayDelta())
            d.sent += day[1].sent
            d.parked += day[1].parked
            if day[1].last_synced_at is not None and (
                    d.last_synced_at is None or day[1].last_synced_at > d.last_synced_at):
                d.last_synced_at = day[1].last_synced_at
        tkey = (snap.target, TARGET_STREAM)
        tbase, failed = apply_target(current.get(tkey), snap)
        if tbase is not None and failed is not None:
            current[tkey] = out.baselines[tkey] = tbase
            for reason, n in failed[1].items():
                fkey = (failed[0], snap.target, reason)
                out.failures[fkey] = out.failures.get(fkey, 0) + n
    return out


def province_sync_figures(rows: list[tuple[str, str, int, int, datetime | None]],
                          failures: list[tuple[str, str, int]], shared: list[str],
                          dataset_name: Any) -> list[dict[str, Any]] | None:
    """Per stream and target: records sent and batches parked in the period, last sync
    time up to its end, the target's failures in the period by reason. `rows` are
    (stream, target, sent, parked, last synced) of every (target, stream) known by the
    period's end; a shared dataset without any is listed with `target` and `sent` None
    ("chưa có số liệu"). None when no status was ever received."""
    if not rows:
        return None
    by_target: dict[str, dict[str, int]] = {}
    for target, reason, n in failures:
        if n:
            by_target.setdefault(target, {})[reason] = by_target.get(target, {}).get(reason, 0) + n
    out = []
    for stream, target, sent, parked, synced in sorted(rows, key=lambda r: (r[0], r[1])):
        out.append({"dataset": stream, "dataset_name": dataset_name(stream), "target": target,
                    "sent": sent, "parked": parked,
                    "last_synced_at": synced.isoformat() if synced is not None else None,
                    "failures": dict(sorted(by_target.get(target, {}).items()))})
    seen = {r[0] for r in rows}
    out += [{"dataset": d, "dataset_name": dataset_name(d), "target": None, "sent": None,
             "parked": None, "last_synced_at": None, "failures": {}}
            for d in sorted(shared) if d not in seen]
    return sorted(out, key=lambda r: (r["dataset"], r["target"] or ""))
