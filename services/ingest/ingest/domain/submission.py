"""The decision for one submission: who sent it, may they, is it valid, what is its canonical form.

Order matters and is part of the contract: identity first (so that every later
rejection can be addressed to the verified unit; an unverified one is addressed to
nobody), then size, strict JSON (duplicate keys refused, BOM stripped), forbidden
characters anywhere in the submission, structure, permission, schema version,
field values. Everything the sender controls that reaches a Kafka key, an envelope
subject, a table column or a metric label is a registry id or bounded and clean.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import structlog
from ioc_shared.contracts.hygiene import HygieneError, find_forbidden, is_clean, loads_strict, strip_bom
from ioc_shared.registry import Action, Dataset, SchemaVersion

from ingest.domain.codes import Code
from ingest.domain.ids import event_ids_of
from ingest.domain.model import Accepted, Decision, Inbound, Problem, Rejected, rejected
from ingest.domain.schema import CompiledSchema, SchemaCatalog, upgrade

H_PRINCIPAL = "ioc-principal"
H_SIGNATURE = "ioc-signature"
ACCEPTED_TYPE = "ingest.record.accepted"
_accepted_id = event_ids_of(ACCEPTED_TYPE)
_HEX = re.compile(r"^[0-9a-fA-F]{64}$")
_TIME_CODES = frozenset({Code.FUTURE_TIMESTAMP, Code.ABSURD_TIMESTAMP})
MAX_CLIENT_EVENT_ID = 128
# Canonical records are keyed `<unit>/<record id>`: a unit id (at most 63 characters,
# no "/") + "/" + this stays within the envelope's 200-character subject.
MAX_RECORD_ID = 128
MAX_PATH = 200
# A rejection lists at most this many problems (with the total): a record of thousands
# of unknown keys must not make a rejection larger than the broker takes (that would
# fail its batch again and again and stall the partition).
MAX_PROBLEMS = 20
REPORTER_REF = "reporter_ref"
_log = structlog.get_logger("ingest.decide")

# Any byte sequence of a JSON document that may decode to a character `find_forbidden`
# refuses: every `\u`, `\b` and `\f` escape, DEL, and the UTF-8 forms of C1 controls,
# zero-width and bidi characters, U+FEFF, U+FFF9-U+FFFB, U+FFFE/F, surrogates (raw C0
# controls cannot be in JSON text that parsed). Only a document with a match is walked
# by `find_forbidden` (the usual submission has none). A property test checks it misses
# nothing.
_MAYBE_FORBIDDEN = re.compile(
    rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\\[ubf]|\xc2[\x80-\x9f]|\xe2\x80[\x8b-\x8f\xaa-\xae]"
    rb"|\xe2\x81[\xa0-\xa4\xa6-\xa9]|\xef\xbb\xbf|\xef\xbf[\xb9-\xbb\xbe\xbf]|\xed[\xa0-\xbf]")


def may_hold_forbidden(serialized: bytes) -> bool:
    """False only when JSON bytes (that parsed) certainly decode to text without forbidden
    characters. First the bytes every candidate starts with, each found by `memchr` (the
    regex alone cost ~10 µs per record): Vietnamese text has none of them."""
    if (b"\\" not in serialized and b"\xe2" not in serialized and b"\xc2" not in serialized
            and b"\xef" not in serialized and b"\xed" not in serialized
            and b"\x7f" not in serialized):
        return False
    return _MAYBE_FORBIDDEN.search(serialized) is not None


def record_json(record: dict[str, Any]) -> bytes:
    """The record's canonical JSON (sorted keys): what `content_hash` hashes."""
    return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)


def content_hash(record: dict[str, Any], serialized: bytes | None = None) -> str:
    return digest_of(record_json(record) if serialized is None else serialized)


def digest_of(serialized: bytes) -> str:
    """The content hash of a record's canonical JSON (`record_json`)."""
    return hashlib.blake2b(serialized, digest_size=16).hexdigest()


def accepted_event_id(unit: str, dataset: str, record_id: str, digest: str) -> str:
    """Same record from the same unit -> same event id, however often it is delivered."""
    return _accepted_id(f"{unit}\x1f{dataset}\x1f{record_id}\x1f{digest}")


def accepted_ids(unit: str, dataset: str, record_id: str, serialized: bytes) -> tuple[str, str]:
    """An accepted record's content hash and event id, from its `record_json`."""
    digest = digest_of(serialized)
    return digest, accepted_event_id(unit, dataset, record_id, digest)


class Ingestor:
    """Pure decision maker over a registry and its compiled schemas."""

    def __init__(self, catalog: SchemaCatalog, *, max_message_bytes: int = 1024 * 1024) -> None:
        self.catalog = catalog
        self.registry = catalog.registry
        self.max_message_bytes = max_message_bytes
        self._permanent: dict[tuple[str, str], bool] = {}
        self._hmac_keys: dict[str, tuple[Any, Any]] = {}
        self._plans: dict[tuple[str, int], _Plan | None] = {}
        with_personal = [ds for ds in self.registry.datasets if self.registry.personal_fields(ds)]
        pseudonym_key = self.registry.pseudonym_key
        # `reporter_ref`'s HMAC from key states prepared once (as for signatures).
        self._pseudonym = hmac_key(pseudonym_key) if pseudonym_key is not None else None
        if with_personal and pseudonym_key is None:
            # Refuse to start rather than reject every record of these datasets.
            raise ValueError("the credentials file has no pseudonym_key, needed for the "
                             f"personal fields of {', '.join(with_personal)}")

    def _may_publish(self, unit: str, dataset: str, now: datetime) -> bool:
        """Registry decision, memoized while no grant involved can expire."""
        key = (unit, dataset)
        known = self._permanent.get(key)
        if known is not None:
            return known
        allowed = bool(self.registry.may(unit, dataset, Action.PUBLISH, now))
        expiring = any(g.expires_at is not None for g in self.registry.grants
                       if g.unit == unit and g.dataset == dataset)
        if not expiring:
            self._permanent[key] = allowed
        return allowed

    def decide(self, inbound: Inbound, now: datetime) -> Decision:
        """Never raises for any input: every failure becomes a `Rejected`."""
        try:
            return self._decide(inbound, now)
        except Exception as exc:  # a bug must not stall the partition: reject, keep the bytes
            # Logged without the exception's message or the payload (they may hold personal
            # data); the quarantine copy has the bytes for whoever fixes it.
            tb = exc.__traceback__
            while tb is not None and tb.tb_next is not None:
                tb = tb.tb_next
            _log.error("internal error deciding a submission", error=type(exc).__name__,
                       at=f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else None,
                       origin=inbound.origin, trace_id=_trace_id(inbound))
            return rejected(Code.INTERNAL_ERROR, extra={"internal_error": type(exc).__name__})

    def verified_sender(self, inbound: Inbound) -> tuple[str, str] | None:
        """(unit, principal) if the submission's signature verifies, else None; never raises."""
        try:
            principal_id, signature = inbound.header_pair(H_PRINCIPAL, H_SIGNATURE)
            claimed = self.registry.principals.get(principal_id or "")
            if claimed is None or not signature or not _HEX.match(signature):
                return None
            if not self._verify(claimed.id, inbound.value or b"", signature):
                return None
            return claimed.unit, claimed.id
        except Exception:
            return None

    def _decide(self, inbound: Inbound, now: datetime) -> Decision:
        value = inbound.value or b""
        principal_id, signature = inbound.header_pair(H_PRINCIPAL, H_SIGNATURE)
        unverified = {"identity_verified": False}
        if not principal_id or not signature or not _HEX.match(signature):
            return rejected(Code.UNAUTHENTICATED, extra=unverified,
                            expected="tiêu đề ioc-principal và ioc-signature (HMAC-SHA256)")
        claimed = self.registry.principals.get(principal_id)
        if claimed is None:
            return rejected(Code.UNKNOWN_UNIT, expected="mã tài khoản hệ thống đã đăng ký",
                            extra=unverified)
        if not self._verify(principal_id, value, signature):
            # Never addressed to the unit it claims to be: anyone could flood its feed.
            return rejected(Code.UNAUTHENTICATED, extra=unverified,
                            expected="chữ ký HMAC-SHA256 của nội dung bằng khóa của đơn vị")
        unit = claimed.unit
        principal = claimed.id
        if len(value) > self.max_message_bytes:
            return rejected(Code.TOO_LARGE, expected=f"tối đa {self.max_message_bytes} byte",
                            unit=unit, principal=principal)
        try:
            body = loads_strict(value)
        except RecursionError:   # the duplicate-key check's parser on a very deep document
            return rejected(Code.MALFORMED_JSON, expected="JSON lồng nhau không quá sâu",
                            unit=unit, principal=principal)
        except HygieneError as exc:
            if exc.code == "duplicate_key":
                return rejected(Code.DUPLICATE_KEY, expected="mỗi khóa một lần trong một đối tượng",
                                detail=f"({_bounded_path(exc.path)})", unit=unit,
                                principal=principal)
            try:
                strip_bom(value).decode("utf-8")
            except UnicodeDecodeError:
                return rejected(Code.UNDECODABLE, expected="văn bản UTF-8", unit=unit,
                                principal=principal)
            return rejected(Code.MALFORMED_JSON, expected="một đối tượng JSON", unit=unit,
                            principal=principal)
        if may_hold_forbidden(value):
            found = find_forbidden(body)
            if found is not None:
                return self._forbidden(found, body, unit, principal)
        return self._submission(body, len(value), unit, principal, now)

    def _forbidden(self, found: HygieneError, body: Any, unit: str, principal: str) -> Rejected:
        """A forbidden character somewhere: addressed with only what is known to be clean."""
        dataset_id = body.get("dataset") if isinstance(body, dict) else None
        ds = self.registry.datasets.get(dataset_id) if isinstance(dataset_id, str) else None
        record = body.get("record") if isinstance(body, dict) else None
        record_id = _raw_record_id(record, ds) if isinstance(record, dict) else None
        code_point = found.detail.split(" ", 1)[0]
        return Rejected(Code.FORBIDDEN_CHARACTER, (Problem(
            Code.FORBIDDEN_CHARACTER, _bounded_path(found.path),
            "văn bản không có ký tự điều khiển, NUL, ký tự định hướng hay ký tự vô hình",
            f"(ký tự {code_point})"),), unit=unit, principal=principal,
            dataset=ds.id if ds else None,
            record_id=record_id if record_id is not None and is_clean(record_id) else None)

    def _verify(self, principal_id: str, body: bytes, signature_hex: str) -> bool:
        """`Registry.verify_signature`, from HMAC key states prepared once per principal
        (about half the cost of `hmac.digest`); the same answer (unit-tested)."""
        key = self._hmac_keys.get(principal_id)
        if key is None:
            secret = self.registry.secret_of(principal_id)
            if secret is None or principal_id not in self.registry.principals:
                return False
            key = self._hmac_keys[principal_id] = hmac_key(secret)
        return hmac.compare_digest(hmac_hex(key, body), signature_hex)

    def _plan(self, dataset: Dataset, version: int) -> _Plan | None:
        """The compiled schema of a version and its upgrade path (None: no such version)."""
        key = (dataset.id, version)
        plan = self._plans.get(key)
        if plan is None and key not in self._plans:
            schema = self.catalog.schema(dataset.id, version)
            plan = None if schema is None else _Plan(
                schema, self.catalog.upgrade_path(dataset.id, version),
                self.catalog.schema(dataset.id, dataset.canonical_version),
                self.registry.personal_fields(dataset.id))
            if len(self._plans) < 1000:
                self._plans[key] = plan
        return plan

    def _submission(self, body: Any, size: int, unit: str, principal: str,
                    now: datetime) -> Decision:
        if not isinstance(body, dict):
            return rejected(Code.MALFORMED_SUBMISSION, expected='{"dataset", "schema_version", "record"}',
                            unit=unit, principal=principal)
        # Any: checked just below (by class, the cheapest test on the hot path).
        dataset_id: Any = body.get("dataset")
        version: Any = body.get("schema_version")
        record: Any = body.get("record")
        client_event_id: Any = body.get("event_id")
        if not (dataset_id.__class__ is str and dataset_id and version.__class__ is int
                and record.__class__ is dict and client_event_id is None):
            # Anything but the usual shape: the full check (and its normalization).
            shape = _shape_problems(body)
            if shape:
                known = dataset_id if isinstance(dataset_id, str) and \
                    dataset_id in self.registry.datasets else None
                return Rejected(Code.MALFORMED_SUBMISSION, tuple(shape), dataset=known,
                                unit=unit, principal=principal)
            version, record, client_event_id = (body["schema_version"], body["record"],
                                                body.get("event_id"))
        ds = self.registry.datasets.get(dataset_id)

        def ctx() -> dict[str, Any]:
            """Who and what a rejection is about: registry ids (None for an unknown
            dataset, never the raw string), the record id as sent if short enough."""
            return {"unit": unit, "principal": principal, "dataset": ds.id if ds else None,
                    "schema_version": version, "client_event_id": client_event_id,
                    "record_id": _raw_record_id(record, ds)}

        if ds is None:
            return rejected(Code.UNKNOWN_DATASET, expected="mã bộ dữ liệu trong danh mục", **ctx())
        if not self._may_publish(unit, ds.id, now):
            return rejected(Code.NOT_PERMITTED, expected="quyền cung cấp (publish) bộ dữ liệu này",
                            **ctx())
        plan = self._plan(ds, version)
        if plan is None:
            versions = ", ".join(str(s.version) for s in ds.schemas)
            return rejected(Code.UNKNOWN_SCHEMA_VERSION, expected=f"một trong: {versions}", **ctx())
        path = plan.path
        if path is None:
            return rejected(Code.UNKNOWN_SCHEMA_VERSION, expected=f"phiên bản nâng cấp được lên "
                            f"v{ds.canonical_version}", **ctx())
        if size > ds.max_record_bytes:
            return rejected(Code.TOO_LARGE, expected=f"tối đa {ds.max_record_bytes} byte", **ctx())
        checked = plan.schema.check(record, now)
        if not checked.problems and path:
            assert plan.canonical is not None
            checked.record = upgrade(checked.record, path)
            checked.problems = plan.canonical.conform(checked.record)
        if checked.problems:
            codes = {p.code for p in checked.problems}
            code = checked.problems[0].code if codes <= _TIME_CODES else Code.SCHEMA_VIOLATION
            problems, extra = _bounded_problems(checked.problems)
            return Rejected(code, problems, extra=extra, **ctx())
        record_id = str(checked.record[ds.record_id_field])
        if len(record_id) > MAX_RECORD_ID:
            # The record id is the Kafka key and the envelope subject: bounded whatever the schema.
            return Rejected(Code.SCHEMA_VIOLATION, (Problem(
                Code.TOO_LONG, ds.record_id_field, f"tối đa {MAX_RECORD_ID} ký tự"),), **ctx())
        full = checked.record
        personal_json = b""
        if plan.personal and not full.keys().isdisjoint(plan.personal):
            # Citizens' personal fields leave the default-sharing record (they go to the
            # restricted topic); a keyed pseudonym lets consumers group by reporter.
            personal = {n: full[n] for n in plan.personal if n in full}
            shared = {k: v for k, v in full.items() if k not in personal}
            assert self._pseudonym is not None   # checked at start
            shared[REPORTER_REF] = pseudonym(self._pseudonym, unit, ds.id, tuple(
                str(full.get(n, "")) for n in plan.personal))
            serialized = record_json(shared)
            personal_json = orjson.dumps(personal)
        else:
            serialized = record_json(full)
        digest, event = accepted_ids(unit, ds.id, record_id, serialized)
        # `record` keeps the personal fields: a special-request grant may name them.
        return Accepted(unit, principal, ds.id, version, ds.canonical_version, record_id,
                        full, digest, event, client_event_id, checked.occurred_at,
                        serialized, personal_json)


@dataclass(frozen=True, slots=True)
class _Plan:
    schema: CompiledSchema
    path: tuple[SchemaVersion, ...] | None
    canonical: CompiledSchema | None
    personal: tuple[str, ...]          # personal fields of the canonical schema, sorted


def hmac_key(secret: bytes) -> tuple[Any, Any]:
    """HMAC-SHA256 inner and outer hash states of a key (RFC 2104), to be copied per message."""
    if len(secret) > 64:
        secret = hashlib.sha256(secret).digest()
    secret = secret.ljust(64, b"\0")
    return (hashlib.sha256(secret.translate(_IPAD)), hashlib.sha256(secret.translate(_OPAD)))


def hmac_hex(key: tuple[Any, Any], body: bytes) -> str:
    """`hmac.digest(secret, body, "sha256").hex()` from `hmac_key(secret)`."""
    inner, outer = key[0].copy(), key[1].copy()
    inner.update(body)
    outer.update(inner.digest())
    return str(outer.hexdigest())


def pseudonym(key: tuple[Any, Any], unit: str, dataset: str, values: tuple[str, ...]) -> str:
    """`ioc_shared.registry.reporter_ref`, from `hmac_key(pseudonym_key)` (unit-tested)."""
    message = "\x1f".join((unit, dataset, *values)).encode("utf-8", "surrogatepass")
    return "r-" + hmac_hex(key, message)[:32]


_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


def _shape_problems(body: dict[str, Any]) -> list[Problem]:
    problems = []
    if not isinstance(body.get("dataset"), str) or not body["dataset"]:
        problems.append(Problem(Code.MISSING if "dataset" not in body else Code.WRONG_TYPE, "dataset",
                                "mã bộ dữ liệu (chuỗi)"))
    version = body.get("schema_version")
    if version.__class__ is not int:   # a JSON integer: not "2", not true, not 2.0
        problems.append(Problem(Code.MISSING if "schema_version" not in body else Code.WRONG_TYPE,
                                "schema_version", "số nguyên, phiên bản cấu trúc"))
    if not isinstance(body.get("record"), dict):
        problems.append(Problem(Code.MISSING if "record" not in body else Code.WRONG_TYPE, "record",
                                "đối tượng JSON chứa các trường của bản ghi"))
    event_id = body.get("event_id")
    if event_id is not None and (not isinstance(event_id, str) or not 0 < len(event_id.strip())
                                 <= MAX_CLIENT_EVENT_ID):
        problems.append(Problem(Code.WRONG_TYPE, "event_id",
                                f"chuỗi 1..{MAX_CLIENT_EVENT_ID} ký tự, duy nhất với mỗi bản ghi"))
    elif isinstance(event_id, str):
        body["event_id"] = event_id.strip()
    return problems


def _raw_record_id(record: dict[str, Any], ds: Any) -> str | None:
    """The record id as sent, for addressing a rejection: None unless it is short enough
    for a key or subject (forbidden characters were refused before)."""
    field = ds.record_id_field if ds is not None else "record_id"
    value = record.get(field)
    if isinstance(value, str | int) and not isinstance(value, bool):
        text = str(value)
        return text if 0 < len(text) <= MAX_RECORD_ID else None
    return None


def _bounded_problems(problems: list[Problem]) -> tuple[tuple[Problem, ...], dict[str, Any]]:
    """The first `MAX_PROBLEMS` problems, field names bounded (a key is sender-controlled),
    and the total when some were left out."""
    kept = tuple(p if p.field is None or len(p.field) <= MAX_PATH else
                 Problem(p.code, _bounded_path(p.field), p.expected, p.detail)
                 for p in problems[:MAX_PROBLEMS])
    return kept, ({"problems_total": len(problems)} if len(problems) > MAX_PROBLEMS else {})


def _bounded_path(path: str) -> str:
    return path if len(path) <= MAX_PATH else path[:MAX_PATH - 1] + "…"


def _trace_id(inbound: Inbound) -> str | None:
    """The sender's W3C trace id (`traceparent`), to find the record's span."""
    parent = inbound.header("traceparent")
    parts = parent.split("-") if parent else ()
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 and is_clean(parts[1]) else None
