"""The hand-built envelope bytes must be exactly what the shared Envelope contract reads."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from ingest.messages import envelope_bytes
from ioc_shared.contracts.envelope import Envelope


class Unfetched:
    """A producer's client whose cluster metadata has no topic yet."""

    class cluster:  # aiokafka's attribute name
        @staticmethod
        def partitions_for_topic(topic: str) -> set[int] | None:
            return None


async def test_sink_follows_the_partitions_of_the_producers_metadata() -> None:
    """An operator grew a topic (`grow-partitions`): once the producer's metadata says so,
    keys go where Kafka's default partitioner puts them among all the partitions."""
    from aiokafka.partitioner import DefaultPartitioner
    from ingest.messages import Outgoing
    from ingest.outgoing import KafkaSink

    class Batch:
        def __init__(self) -> None:
            self.keys: list[bytes | None] = []

        def append(self, *, key: bytes | None, **_: object) -> object:
            self.keys.append(key)
            return object()

    partitions = {0, 1, 2}

    class Cluster:
        def partitions_for_topic(self, topic: str) -> set[int]:
            return partitions

    class Producer:
        client = type("Client", (), {"cluster": Cluster()})()

        def __init__(self) -> None:
            self.sent: dict[int, list[bytes | None]] = {}

        def create_batch(self) -> Batch:
            return Batch()

        async def send_batch(self, batch: Batch, topic: str, partition: int) -> object:
            self.sent.setdefault(partition, []).extend(batch.keys)
            import asyncio

            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

    producer = Producer()
    sink = KafkaSink(producer)  # type: ignore[arg-type]
    keys = [f"xa-loc-an/PA-{i}".encode() for i in range(60)]
    await sink.send_all([Outgoing("t", b"v", k, []) for k in keys])
    assert set(producer.sent) == {0, 1, 2}
    partitions = {0, 1, 2, 3, 4, 5}
    producer.sent.clear()
    await sink.send_all([Outgoing("t", b"v", k, []) for k in keys])
    default = DefaultPartitioner()
    for key in keys:
        assert key in producer.sent[default(key, list(range(6)), list(range(6)))]
    await sink.close()


def test_fast_envelope_bytes_match_the_contract() -> None:
    fields = {
        "event_id": uuid.uuid4(), "type": "ingest.record.accepted", "source_unit": "xa-loc-an",
        "subject": "PA-1", "occurred_at": datetime(2026, 11, 28, 7, 30, tzinfo=UTC),
        "produced_at": datetime(2026, 11, 28, 7, 30, 1, 123456, tzinfo=UTC),
        "causation_id": uuid.uuid4(),
        "payload": {"record": {"title": "Rác thải", "n": 1.5, "geo": {"lat": 11.8, "lon": 106.6}}},
    }
    fast = envelope_bytes(**fields)  # type: ignore[arg-type]
    assert Envelope.from_bytes(fast) == Envelope(**fields)  # type: ignore[arg-type]
    assert fast == Envelope(**fields).to_bytes()  # type: ignore[arg-type]


async def test_sink_partitions_keys_like_kafkas_default_partitioner() -> None:
    from aiokafka.partitioner import DefaultPartitioner
    from ingest.messages import Outgoing
    from ingest.outgoing import KafkaSink

    class Batch:
        def __init__(self) -> None:
            self.records: list[bytes | None] = []

        def append(self, *, key: bytes | None, value: bytes, timestamp: None,
                   headers: list[tuple[str, bytes]]) -> object:
            self.records.append(key)
            return object()

        def record_count(self) -> int:
            return len(self.records)

    class Producer:
        client = Unfetched()

        def __init__(self) -> None:
            self.sent: dict[tuple[str, int], list[bytes | None]] = {}

        async def partitions_for(self, topic: str) -> set[int]:
            return {0, 1, 2, 3, 4, 5} if topic == "six" else {0, 1, 2}

        def create_batch(self) -> Batch:
            return Batch()

        async def send_batch(self, batch: Batch, topic: str, partition: int) -> object:
            self.sent[(topic, partition)] = batch.records
            import asyncio

            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.set_result(None)
            return future

    producer = Producer()
    keys = [f"PA-{i}".encode() for i in range(50)]
    await KafkaSink(producer).send_all(  # type: ignore[arg-type]
        [Outgoing(topic, b"v", key, []) for key in keys for topic in ("six", "three")])
    default = DefaultPartitioner()
    for key in keys:
        assert key in producer.sent[("six", default(key, list(range(6)), list(range(6))))]
        assert key in producer.sent[("three", default(key, [0, 1, 2], [0, 1, 2]))]


def test_batch_outputs_build_the_same_envelopes_as_the_generic_builder() -> None:
    import orjson
    from ingest.domain import Accepted, Inbound, SharedView
    from ingest.domain.submission import content_hash, record_json
    from ingest.messages import Outputs
    from ingest.outgoing import trace_headers
    from ioc_shared.registry import Grant

    now = datetime(2026, 11, 28, 7, 30, 1, 123456, tzinfo=UTC)
    record = {"record_id": 'PA-"1"\\', "title": "Rác thải", "reported_at": "2026-11-28T07:30:00Z",
              "location": {"lat": 11.8, "lon": 106.6}}
    grant = Grant.model_validate({
        "id": "sr-1", "unit": "cong-an-huyen", "dataset": "phan-anh-hien-truong",
        "actions": ["receive"], "mode": "special-request", "fields": ["record_id", "title"],
        "purpose": "Phối hợp \"xử lý\"", "expires_at": "2027-06-30T23:59:59+07:00"})
    for occurred, client_event_id in ((datetime(2026, 11, 28, 7, 30, tzinfo=UTC), 'ev-"1"'),
                                      (None, None)):
        acc = Accepted("xa-loc-an", "xa-loc-an-system", "phan-anh-hien-truong", 1, 2,
                       record["record_id"], record, content_hash(record), str(uuid.uuid4()),
                       client_event_id, occurred, record_json(record))
        inbound = Inbound(b"{}", (), "in:3:17")
        view = SharedView(grant, {"record_id": acc.record_id, "title": "Rác thải"}, str(uuid.uuid4()))
        canonical, shared = Outputs(now, {acc.dataset: "c"}, {"sr-1": "s"}).accepted(
            acc, inbound, trace_headers(None), [view])
        expected = envelope_bytes(
            event_id=acc.event_id, type="ingest.record.accepted", source_unit=acc.unit,
            subject=f"xa-loc-an/{acc.record_id}", occurred_at=occurred or now, produced_at=now,
            payload={
                "dataset": acc.dataset, "schema_version": 2, "source_schema_version": 1,
                "record_id": acc.record_id, "record": record, "client_event_id": client_event_id,
                "provenance": {"principal": acc.principal, "channel": "kafka", "origin": "in:3:17",
                               "content_hash": acc.content_hash}})
        assert orjson.loads(canonical.value) == orjson.loads(expected)
        assert Envelope.from_bytes(canonical.value) == Envelope.from_bytes(expected)
        assert (canonical.topic, canonical.key) == ("c", f"xa-loc-an/{acc.record_id}".encode())
        assert dict(canonical.headers)["ioc-event-id"] == acc.event_id.encode()
        expected = envelope_bytes(
            event_id=view.event_id, type="ingest.record.shared", source_unit=acc.unit,
            subject=f"xa-loc-an/{acc.record_id}", occurred_at=occurred or now, produced_at=now,
            causation_id=acc.event_id, payload={
                "dataset": acc.dataset, "schema_version": 2, "record_id": acc.record_id,
                "record": view.record, "grant_id": "sr-1", "requester": "cong-an-huyen",
                "purpose": grant.purpose, "expires_at": "2027-06-30T16:59:59Z"})
        assert orjson.loads(shared.value) == orjson.loads(expected)
        assert Envelope.from_bytes(shared.value) == Envelope.from_bytes(expected)
        assert (shared.topic, dict(shared.headers)["ioc-event-id"]) == ("s", view.event_id.encode())


async def test_sink_hands_batches_over_in_order_without_blocking_the_caller() -> None:
    import asyncio

    from ingest.messages import Outgoing
    from ingest.outgoing import KafkaSink

    class Batch:
        def __init__(self) -> None:
            self.values: list[bytes] = []

        def append(self, *, key: bytes | None, value: bytes, timestamp: None,
                   headers: list[tuple[str, bytes]]) -> object | None:
            if len(self.values) >= 3:
                return None     # full
            self.values.append(value)
            return object()

    class Producer:
        client = Unfetched()

        def __init__(self) -> None:
            self.sent: list[list[bytes]] = []
            self.gate = asyncio.Event()
            self.all_sent = asyncio.Event()
            self.confirmations: list[asyncio.Future[None]] = []

        async def partitions_for(self, topic: str) -> set[int]:
            return {0}

        def create_batch(self) -> Batch:
            return Batch()

        async def send_batch(self, batch: Batch, topic: str, partition: int) -> object:
            await self.gate.wait()   # as aiokafka, while an earlier batch is not drained
            self.sent.append(batch.values)
            if len(self.sent) == 3:
                self.all_sent.set()
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.confirmations.append(future)
            return future

    producer = Producer()
    sink = KafkaSink(producer)  # type: ignore[arg-type]
    first = await sink.enqueue([Outgoing("t", b"1", b"k", []), Outgoing("t", b"2", b"k", [])])
    await asyncio.sleep(0)      # the first batch is being handed over (and waits)
    second = await sink.enqueue([Outgoing("t", v, b"k", []) for v in (b"3", b"4", b"5", b"6")])
    assert not any(f.done() for f in [*first, *second])
    producer.gate.set()
    await producer.all_sent.wait()
    assert producer.sent == [[b"1", b"2"], [b"3", b"4", b"5"], [b"6"]]
    for c in producer.confirmations:
        c.set_result(None)
    await asyncio.gather(*first, *second)
    await sink.close()
