"""The organisation registry: units, principals, datasets and sharing grants.

It is configuration, not code (a commune-level or merged centre edits the file,
not the program). `load_registry` validates the file and reports every problem
with the file name, the entry and what is wrong. Secrets live in a separate
credentials file so the registry itself can be reviewed and versioned openly.
"""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

ID_PATTERN = r"^[a-z0-9][a-z0-9\-]{0,62}$"


class RegistryError(ValueError):
    """The registry or credentials file is invalid; `problems` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid registry:\n  " + "\n  ".join(problems))


class UnitKind(StrEnum):
    DISTRICT = "district"          # UBND huyện
    IOC = "ioc"                    # the operations centre itself
    DEPARTMENT = "department"      # cơ quan, ban ngành huyện
    COMMUNE = "commune"            # xã
    TOWN = "town"                  # thị trấn
    COOPERATING = "cooperating"    # Đ3.10: Phòng VH-TT, Công an, VNPT
    PROVINCE = "province"          # Sở TT&TT, IOC tỉnh


class Cadence(StrEnum):
    CONTINUOUS = "continuous"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


class SharingMode(StrEnum):
    DEFAULT = "default"                    # Đ3.5
    SPECIAL_REQUEST = "special-request"    # Đ3.6


class Action(StrEnum):
    PUBLISH = "publish"   # send records of the dataset to the IOC
    READ = "read"         # subscribe to the canonical (default-sharing) topic
    RECEIVE = "receive"   # get a per-requester derived stream (special request)


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Contact(_Strict):
    """Đ10.4: an officer named by a unit to update data or handle incidents."""

    name: str
    title: str = ""
    role: Literal["data-officer", "incident-officer", "head", "leader"] = "data-officer"
    email: str | None = None
    phone: str | None = None


class Unit(_Strict):
    id: str = Field(pattern=ID_PATTERN)
    name: str = Field(min_length=1)
    kind: UnitKind
    parent: str | None = None
    aliases: tuple[str, ...] = ()
    contacts: tuple[Contact, ...] = ()
    # Approximate centre (lat, lon), used to check coordinates and for areas.
    centre: tuple[float, float] | None = None
    # May incidents be assigned to this unit? Unset: departments, communes, towns and
    # cooperating units do; the district, the IOC and provincial bodies do not.
    handles_incidents: bool | None = None

    @property
    def may_handle_incidents(self) -> bool:
        if self.handles_incidents is not None:
            return self.handles_incidents
        return self.kind in _HANDLING_KINDS


_HANDLING_KINDS = frozenset({UnitKind.DEPARTMENT, UnitKind.COMMUNE, UnitKind.TOWN,
                             UnitKind.COOPERATING})


class Principal(_Strict):
    """A credential holder: a unit's system or an IOC role, acting for a unit."""

    id: str = Field(pattern=ID_PATTERN)
    unit: str
    roles: tuple[str, ...] = ()


FieldType = Literal[
    "string", "text", "integer", "decimal", "boolean", "date", "datetime",
    "enum", "phone", "email", "commune", "unit", "geo",
]


class FieldSpec(_Strict):
    type: FieldType
    required: bool = False
    max_length: int | None = Field(default=None, ge=1)
    min: float | None = None
    max: float | None = None
    values: tuple[str, ...] = ()
    personal: bool = False       # personal data of citizens: never logged, never mirrored
    description: str = ""


class SchemaVersion(_Strict):
    version: int = Field(ge=1)
    fields: dict[str, FieldSpec]
    # How to upgrade a record of the previous version into this one.
    upgrade_from: int | None = None
    rename: dict[str, str] = Field(default_factory=dict)
    defaults: dict[str, Any] = Field(default_factory=dict)
    drop: tuple[str, ...] = ()


class Dataset(_Strict):
    id: str = Field(pattern=ID_PATTERN)
    name: str
    owner: str
    domain: str = "general"      # public-service, field-report, health, education, socio-economic
    cadence: Cadence
    sharing: SharingMode = SharingMode.DEFAULT
    shared_with_province: bool = False
    incident: bool = False       # records are incidents that routing dispatches
    record_id_field: str = "record_id"
    canonical_version: int
    schemas: tuple[SchemaVersion, ...]
    max_record_bytes: int = 64 * 1024

    def schema_for(self, version: int) -> SchemaVersion | None:
        return next((s for s in self.schemas if s.version == version), None)


class Grant(_Strict):
    id: str = Field(pattern=ID_PATTERN)
    unit: str
    dataset: str
    actions: tuple[Action, ...]
    mode: SharingMode = SharingMode.DEFAULT
    fields: tuple[str, ...] | None = None    # special request: only these fields
    purpose: str | None = None
    expires_at: AwareDatetime | None = None

    def active(self, at: datetime) -> bool:
        return self.expires_at is None or at < self.expires_at


class Centre(_Strict):
    id: str = Field(pattern=ID_PATTERN)
    name: str
    unit: str                     # the unit that runs the centre
    parent_centre: str | None = None
    timezone: str = "Asia/Ho_Chi_Minh"
    # Bounding box of the area served: (min_lat, min_lon, max_lat, max_lon).
    bbox: tuple[float, float, float, float] | None = None


class _RegistryFile(_Strict):
    centre: Centre
    units: tuple[Unit, ...]
    principals: tuple[Principal, ...] = ()
    datasets: tuple[Dataset, ...] = ()
    grants: tuple[Grant, ...] = ()


# Old-style tone placement ("hoà", "thuý") and new style ("hòa", "thúy") are both
# in use; fold to the new style so both spellings match.
_TONE_PLACEMENT = {
    old: new
    for base, marks in (("oa", "àáảãạ"), ("oe", "èéẻẽẹ"), ("uy", "ỳýỷỹỵ"))
    for old, new in (
        (base[0] + mark, {"a": "òóỏõọ", "e": "òóỏõọ", "y": "ùúủũụ"}[base[1]][i] + base[1])
        for i, mark in enumerate(marks)
    )
}
_UNIT_PREFIXES = ("ubnd ", "xã ", "thị trấn ", "tt. ", "tt ", "phường ", "huyện ")


def fold_name(text: str) -> str:
    """Case- and spacing-insensitive key for names; keeps diacritics.

    Diacritics stay because they distinguish real names (Lộc Thành / Lộc Thạnh).
    """
    text = unicodedata.normalize("NFC", text).strip().lower()
    text = " ".join(text.replace("_", " ").replace("-", " ").split())
    for old, new in _TONE_PLACEMENT.items():
        text = text.replace(old, new)
    for prefix in _UNIT_PREFIXES:
        if text.startswith(prefix) and len(text) > len(prefix):
            text = text[len(prefix):]
            break
    return text


def ascii_fold(text: str) -> str:
    """Diacritic-free key, for input typed without Vietnamese keyboards."""
    text = unicodedata.normalize("NFD", fold_name(text)).replace("đ", "d")
    return "".join(ch for ch in text if unicodedata.category(ch) != "Mn")


class Registry:
    """Validated, indexed registry. Immutable once loaded."""

    def __init__(self, data: _RegistryFile, secrets: Mapping[str, str], source: str,
                 credentials: Credentials | None = None) -> None:
        self.source = source
        self.centre = data.centre
        self.units: dict[str, Unit] = {u.id: u for u in data.units}
        self.principals: dict[str, Principal] = {p.id: p for p in data.principals}
        self.datasets: dict[str, Dataset] = {d.id: d for d in data.datasets}
        self.grants: tuple[Grant, ...] = data.grants
        self._secrets = {k: v.encode() for k, v in secrets.items()}
        creds = credentials if credentials is not None else Credentials(dict(secrets))
        # sha256 hex of a bearer token -> principal id (tokens are not the signing keys).
        self._token_hashes = {h: pid for pid, hashes in creds.tokens.items() for h in hashes}
        self.pseudonym_key: bytes | None = (creds.pseudonym_key.encode()
                                            if creds.pseudonym_key else None)
        self._names: dict[str, str] = {}
        ascii_names: dict[str, set[str]] = {}
        for unit in data.units:
            for name in (unit.id, unit.name, *unit.aliases):
                self._names.setdefault(fold_name(name), unit.id)
                ascii_names.setdefault(ascii_fold(name), set()).add(unit.id)
        # Without diacritics only unambiguous names resolve ("Loc Thanh" does not).
        self._ascii_names = {k: next(iter(v)) for k, v in ascii_names.items() if len(v) == 1}

    # --- units -------------------------------------------------------------
    def resolve_unit(self, name_or_alias: str) -> str | None:
        """Registry id of a unit given its id, official name or an alias."""
        found = self._names.get(fold_name(name_or_alias))
        return found or self._ascii_names.get(ascii_fold(name_or_alias))

    def resolve_commune(self, name_or_alias: str) -> str | None:
        unit_id = self.resolve_unit(name_or_alias)
        if unit_id and self.units[unit_id].kind in (UnitKind.COMMUNE, UnitKind.TOWN):
            return unit_id
        return None

    def communes(self) -> list[Unit]:
        return [u for u in self.units.values() if u.kind in (UnitKind.COMMUNE, UnitKind.TOWN)]

    # --- grants ------------------------------------------------------------
    def grants_for(self, unit: str, dataset: str, action: Action,
                   at: datetime | None = None) -> list[Grant]:
        at = at or datetime.now(UTC)
        return [g for g in self.grants
                if g.unit == unit and g.dataset == dataset and action in g.actions and g.active(at)]

    def may(self, unit: str, dataset: str, action: Action, at: datetime | None = None) -> bool:
        if action is Action.PUBLISH:
            ds = self.datasets.get(dataset)
            if ds is not None and ds.owner == unit:
                return True
        return bool(self.grants_for(unit, dataset, action, at))

    def special_grants(self, dataset: str | None = None) -> list[Grant]:
        return [g for g in self.grants if g.mode is SharingMode.SPECIAL_REQUEST
                and (dataset is None or g.dataset == dataset)]

    # --- credentials -------------------------------------------------------
    def secret_of(self, principal_id: str) -> bytes | None:
        return self._secrets.get(principal_id)

    def authenticate_token(self, token: str) -> Principal | None:
        """Principal holding this HTTP bearer token (its SHA-256 is in the credentials file).

        A plain hash lookup is enough: tokens are random and high-entropy, so neither a
        slow hash nor a constant-time compare protects anything more (the hash of a
        guess says nothing about the hashes stored)."""
        pid = self._token_hashes.get(token_hash(token))
        return self.principals.get(pid) if pid is not None else None

    def has_token(self, principal_id: str) -> bool:
        return principal_id in self._token_hashes.values()

    # --- personal fields ---------------------------------------------------
    def personal_fields(self, dataset_id: str, version: int | None = None) -> tuple[str, ...]:
        """Fields marked `personal: true` in a schema of a dataset (canonical by default)."""
        ds = self.datasets.get(dataset_id)
        schema = ds.schema_for(ds.canonical_version if version is None else version) if ds else None
        return tuple(sorted(n for n, f in schema.fields.items() if f.personal)) if schema else ()

    def verify_signature(self, principal_id: str, body: bytes, signature_hex: str) -> Principal | None:
        """Principal if `signature_hex` is HMAC-SHA256(secret, body); identity never from payload."""
        secret = self._secrets.get(principal_id)
        principal = self.principals.get(principal_id)
        if secret is None or principal is None:
            return None
        expected = hmac.digest(secret, body, "sha256").hex()   # one-shot, in C
        return principal if hmac.compare_digest(expected, signature_hex) else None


def token_hash(token: str) -> str:
    """How the credentials file stores an HTTP bearer token: `sha256:<hex>`."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def reporter_ref(key: bytes, unit: str, dataset: str, values: tuple[str, ...]) -> str:
    """Pseudonymous reference to the person behind a record's personal fields:
    `"r-" + hex(HMAC-SHA256(key, unit \\x1f dataset \\x1f v1 \\x1f v2 ...))[:32]`, the values
    being the normalized personal fields in field-name order ("" when absent). Same person,
    same unit and dataset -> same reference; without the key it cannot be reversed."""
    message = "\x1f".join((unit, dataset, *values)).encode("utf-8", "surrogatepass")
    return "r-" + hmac.digest(key, message, "sha256").hex()[:32]


def sign(secret: str | bytes, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, body, hashlib.sha256).hexdigest()


# --- loading -----------------------------------------------------------------

def _entry_label(section: str, index: int, raw: Any) -> str:
    ident = raw.get("id") if isinstance(raw, dict) else None
    return f"{section}[{index}]" + (f" (id={ident})" if ident else "")


def _pydantic_problems(path: str, raw: Mapping[str, Any], err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        loc = list(e["loc"])
        where = ".".join(str(p) for p in loc)
        if len(loc) >= 2 and isinstance(loc[1], int) and isinstance(raw.get(str(loc[0])), list):
            section, index = str(loc[0]), loc[1]
            items = raw[section]
            label = _entry_label(section, index, items[index] if index < len(items) else None)
            rest = ".".join(str(p) for p in loc[2:])
            where = label + (f" field '{rest}'" if rest else "")
        problems.append(f"{path}: {where}: {e['msg']}")
    return problems


def _cross_check(path: str, data: _RegistryFile) -> list[str]:
    problems: list[str] = []
    unit_ids = set()
    for i, u in enumerate(data.units):
        if u.id in unit_ids:
            problems.append(f"{path}: units[{i}] (id={u.id}): duplicate unit id")
        unit_ids.add(u.id)
    for i, u in enumerate(data.units):
        if u.parent is not None and u.parent not in unit_ids:
            problems.append(f"{path}: units[{i}] (id={u.id}): parent '{u.parent}' is not a known unit")
    seen_names: dict[str, str] = {}
    for i, u in enumerate(data.units):
        for name in (u.name, *u.aliases):
            key = fold_name(name)
            if key in seen_names and seen_names[key] != u.id:
                problems.append(f"{path}: units[{i}] (id={u.id}): name or alias '{name}' "
                                f"is already used by unit '{seen_names[key]}'")
            seen_names.setdefault(key, u.id)
    if data.centre.unit not in unit_ids:
        problems.append(f"{path}: centre: unit '{data.centre.unit}' is not a known unit")
    for i, p in enumerate(data.principals):
        if p.unit not in unit_ids:
            problems.append(f"{path}: principals[{i}] (id={p.id}): unit '{p.unit}' is not a known unit")
    dataset_ids = set()
    for i, d in enumerate(data.datasets):
        label = f"{path}: datasets[{i}] (id={d.id})"
        if d.id in dataset_ids:
            problems.append(f"{label}: duplicate dataset id")
        dataset_ids.add(d.id)
        if d.owner not in unit_ids:
            problems.append(f"{label}: owner '{d.owner}' is not a known unit")
        versions = [s.version for s in d.schemas]
        if len(set(versions)) != len(versions):
            problems.append(f"{label}: schema versions repeat: {versions}")
        if d.canonical_version not in versions:
            problems.append(f"{label}: canonical_version {d.canonical_version} has no schema")
        for s in d.schemas:
            if s.upgrade_from is not None and s.upgrade_from not in versions:
                problems.append(f"{label}: schema v{s.version} upgrades from unknown v{s.upgrade_from}")
            if d.record_id_field not in s.fields:
                problems.append(f"{label}: schema v{s.version} lacks the record id field "
                                f"'{d.record_id_field}'")
            for name, spec in s.fields.items():
                if spec.type == "enum" and not spec.values:
                    problems.append(f"{label}: schema v{s.version} field '{name}': enum without values")
    grant_ids = set()
    for i, g in enumerate(data.grants):
        label = f"{path}: grants[{i}] (id={g.id})"
        if g.id in grant_ids:
            problems.append(f"{label}: duplicate grant id")
        grant_ids.add(g.id)
        if g.unit not in unit_ids:
            problems.append(f"{label}: unit '{g.unit}' is not a known unit")
        ds = next((d for d in data.datasets if d.id == g.dataset), None)
        if ds is None:
            problems.append(f"{label}: dataset '{g.dataset}' is not a known dataset")
        if g.mode is SharingMode.SPECIAL_REQUEST:
            missing = [n for n, v in (("purpose", g.purpose), ("expires_at", g.expires_at),
                                      ("fields", g.fields)) if not v]
            if missing:
                problems.append(f"{label}: a special-request grant needs {', '.join(missing)}")
            if ds is not None and g.fields:
                canonical = ds.schema_for(ds.canonical_version)
                unknown = [f for f in g.fields if canonical and f not in canonical.fields]
                if unknown:
                    problems.append(f"{label}: fields {unknown} are not in {ds.id} "
                                    f"v{ds.canonical_version}")
        elif Action.RECEIVE in g.actions:
            problems.append(f"{label}: 'receive' is only for special-request grants")
    return problems


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RegistryError([f"{path}: cannot read: {exc.strerror or exc}"]) from exc
    except yaml.YAMLError as exc:
        raise RegistryError([f"{path}: not valid YAML: {exc}"]) from exc


def parse_registry(raw: Any, source: str, secrets: Mapping[str, str] | None = None,
                   credentials: Credentials | None = None) -> Registry:
    if not isinstance(raw, dict):
        raise RegistryError([f"{source}: top level must be a mapping with centre, units, ..."])
    try:
        data = _RegistryFile.model_validate(raw)
    except ValidationError as exc:
        raise RegistryError(_pydantic_problems(source, raw, exc)) from exc
    problems = _cross_check(source, data)
    if credentials is None:
        credentials = Credentials(dict(secrets or {}))
    principal_ids = {p.id for p in data.principals}
    problems += [f"{source}: credentials for unknown principal '{pid}'"
                 for pid in (*credentials.secrets, *credentials.tokens) if pid not in principal_ids]
    if problems:
        raise RegistryError(problems)
    return Registry(data, credentials.secrets, source, credentials)


class Credentials(dict[str, str]):
    """The credentials file, kept outside the repository in production. As a mapping:
    principal id -> signing key (what `load_credentials` always returned).

    ```yaml
    secrets:        # HMAC-SHA256 signing keys of Kafka submissions and commands
      xa-loc-an-system: <at least 16 characters>
    tokens:         # HTTP bearer tokens, stored as hashes; a list, so two are valid during rotation
      xa-loc-an-system: ["sha256:<hex of SHA-256(token)>", ...]
    pseudonym_key: <at least 16 characters>   # key of reporter_ref pseudonyms
    ```
    """

    def __init__(self, secrets: Mapping[str, str], tokens: dict[str, tuple[str, ...]] | None = None,
                 pseudonym_key: str | None = None) -> None:
        super().__init__(secrets)
        self.tokens = tokens or {}
        self.pseudonym_key = pseudonym_key

    @property
    def secrets(self) -> dict[str, str]:
        return dict(self)


_TOKEN_HASH_LEN = len("sha256:") + 64


def load_credentials(path: Path) -> Credentials:
    raw = _read_yaml(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("secrets", {}), dict):
        raise RegistryError([f"{path}: expected a mapping 'secrets: {{principal-id: secret}}'"])
    secrets = raw.get("secrets") or {}
    problems = [f"{path}: secrets.{k}: secret must be a string of at least 16 characters"
                for k, v in secrets.items() if not isinstance(v, str) or len(v) < 16]
    tokens_raw = raw.get("tokens") or {}
    tokens: dict[str, tuple[str, ...]] = {}
    if not isinstance(tokens_raw, dict):
        problems.append(f"{path}: tokens: expected a mapping 'principal-id: [sha256:<hex>, ...]'")
        tokens_raw = {}
    for pid, hashes in tokens_raw.items():
        items = [hashes] if isinstance(hashes, str) else hashes
        if (not isinstance(items, list) or not 1 <= len(items) <= 2
                or not all(isinstance(h, str) and h.startswith("sha256:")
                           and len(h) == _TOKEN_HASH_LEN for h in items)):
            problems.append(f"{path}: tokens.{pid}: expected one or two (during rotation) "
                            "'sha256:<64 hex digits>' hashes of bearer tokens")
            continue
        tokens[str(pid)] = tuple(h.lower() for h in items)
    for pid, hashes in tokens.items():
        secret = secrets.get(pid)
        if isinstance(secret, str) and token_hash(secret) in hashes:
            problems.append(f"{path}: tokens.{pid}: the bearer token must not be the signing key")
    key = raw.get("pseudonym_key")
    if key is not None and (not isinstance(key, str) or len(key) < 16):
        problems.append(f"{path}: pseudonym_key must be a string of at least 16 characters")
    if problems:
        raise RegistryError(problems)
    return Credentials({str(k): str(v) for k, v in secrets.items()}, tokens,
                       key if isinstance(key, str) else None)


def load_registry(path: str | Path, credentials: str | Path | None = None) -> Registry:
    """Load and validate the registry (and optional credentials) from YAML files."""
    path = Path(path)
    creds = load_credentials(Path(credentials)) if credentials else Credentials({})
    return parse_registry(_read_yaml(path), str(path), credentials=creds)
