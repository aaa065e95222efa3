import unicodedata
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from ioc_shared.platform.settings import REPO_ROOT
from ioc_shared.registry import Action, RegistryError, load_registry, sign

SEED = REPO_ROOT / "config" / "registry.yaml"
CREDS = REPO_ROOT / "config" / "credentials.dev.yaml"


@pytest.fixture
def seed() -> dict:
    return yaml.safe_load(SEED.read_text(encoding="utf-8"))


def write(tmp_path: Path, data: object, name: str = "registry.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def problems_of(path: Path, creds: Path | None = None) -> list[str]:
    with pytest.raises(RegistryError) as info:
        load_registry(path, creds)
    return info.value.problems


def test_seed_registry_loads_with_every_commune_of_loc_ninh() -> None:
    reg = load_registry(SEED, CREDS)
    names = {u.name for u in reg.communes()}
    assert len(names) == 16  # fifteen communes and the town
    assert "Thị trấn Lộc Ninh" in names and "Xã Lộc Thạnh" in names and "Xã Lộc Thành" in names
    assert reg.centre.parent_centre == "ioc-binh-phuoc"


@pytest.mark.parametrize(("text", "expected"), [
    ("Lộc An", "xa-loc-an"),
    ("xã Lộc An", "xa-loc-an"),
    ("  LỘC   AN ", "xa-loc-an"),
    ("Loc An", "xa-loc-an"),
    ("Lộc Hoà", "xa-loc-hoa"),               # old-style tone placement
    (unicodedata.normalize("NFD", "Lộc Hòa"), "xa-loc-hoa"),
    ("Lộc Thạnh", "xa-loc-thanh-nang"),
    ("Lộc Thành", "xa-loc-thanh-huyen"),
    ("Loc Thanh", None),                      # ambiguous without diacritics
    ("TT. Lộc Ninh", "tt-loc-ninh"),
    ("Phòng GD-ĐT", None),                    # a department is not a commune
])
def test_commune_resolution(text: str, expected: str | None) -> None:
    assert load_registry(SEED).resolve_commune(text) == expected


def test_grants_publish_read_and_special_request_expiry() -> None:
    reg = load_registry(SEED)
    assert reg.may("xa-loc-an", "phan-anh-hien-truong", Action.PUBLISH)
    assert not reg.may("xa-loc-hung", "phan-anh-hien-truong", Action.PUBLISH)
    assert reg.may("trung-tam-y-te", "chi-so-y-te", Action.PUBLISH)  # owner publishes its own
    assert reg.may("phong-tn-mt", "phan-anh-hien-truong", Action.READ)
    assert not reg.may("phong-tn-mt", "phan-anh-hien-truong", Action.PUBLISH)
    before = datetime(2027, 6, 1, tzinfo=UTC)
    after = datetime(2027, 7, 1, tzinfo=UTC)
    assert reg.may("cong-an-huyen", "phan-anh-hien-truong", Action.RECEIVE, before)
    assert not reg.may("cong-an-huyen", "phan-anh-hien-truong", Action.RECEIVE, after)


def test_credentials_sign_and_verify_identity() -> None:
    reg = load_registry(SEED, CREDS)
    body = b'{"dataset": "phan-anh-hien-truong"}'
    good = sign("dev-secret-xa-loc-an-0001", body)
    principal = reg.verify_signature("xa-loc-an-system", body, good)
    assert principal is not None and principal.unit == "xa-loc-an"
    assert reg.verify_signature("xa-loc-an-system", body + b" ", good) is None
    assert reg.verify_signature("tt-loc-ninh-system", body, good) is None  # someone else's key
    assert reg.verify_signature("nobody", body, good) is None
    assert reg.authenticate_token("dev-token-ioc-leader-0001").id == "ioc-leader"  # type: ignore[union-attr]
    assert reg.authenticate_token("dev-secret-ioc-leader-0001") is None   # a signing key is no token
    assert reg.authenticate_token("dev-secret-wrong") is None


def test_bearer_tokens_are_hashes_two_at_once_while_rotating(tmp_path: Path) -> None:
    from ioc_shared.registry import load_credentials, token_hash

    creds = tmp_path / "creds.yaml"
    creds.write_text(yaml.safe_dump({
        "secrets": {"xa-loc-an-system": "signing-key-xa-loc-an-01"},
        "tokens": {"xa-loc-an-system": [token_hash("old-token-aaaaaaaaaaaa"),
                                        token_hash("new-token-bbbbbbbbbbbb")]},
        "pseudonym_key": "pseudonym-key-0123456789"}))
    reg = load_registry(SEED, creds)
    assert reg.authenticate_token("old-token-aaaaaaaaaaaa").unit == "xa-loc-an"  # type: ignore[union-attr]
    assert reg.authenticate_token("new-token-bbbbbbbbbbbb").unit == "xa-loc-an"  # type: ignore[union-attr]
    assert reg.authenticate_token("signing-key-xa-loc-an-01") is None
    assert reg.pseudonym_key == b"pseudonym-key-0123456789"
    creds.write_text(yaml.safe_dump({
        "secrets": {"xa-loc-an-system": "signing-key-xa-loc-an-01"},
        "tokens": {"xa-loc-an-system": [token_hash("signing-key-xa-loc-an-01")]}}))
    with pytest.raises(RegistryError, match="must not be the signing key"):
        load_credentials(creds)
    creds.write_text(yaml.safe_dump({"tokens": {"xa-loc-an-system": ["plain-token"]}}))
    with pytest.raises(RegistryError, match="sha256"):
        load_credentials(creds)


def test_services_refuse_repository_credentials_outside_dev_mode(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from ioc_shared.platform.settings import ServiceSettings
    from pydantic import ValidationError

    monkeypatch.delenv("IOC_DEV_MODE", raising=False)
    monkeypatch.delenv("IOC_CREDENTIALS_FILE", raising=False)
    monkeypatch.setenv("IOC_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")   # Kafka is not the point
    with pytest.raises(ValidationError, match="inside the repository"):
        ServiceSettings()
    with pytest.raises(ValidationError, match="no credentials file"):
        ServiceSettings(credentials_file=None)
    outside = tmp_path / "credentials.yaml"
    assert ServiceSettings(credentials_file=outside).credentials_file == outside
    monkeypatch.setenv("IOC_DEV_MODE", "1")
    assert ServiceSettings().dev_mode


def test_error_names_file_entry_and_problem_for_unknown_parent(tmp_path: Path, seed: dict) -> None:
    seed["units"][3]["parent"] = "phong-khong-ton-tai"
    path = write(tmp_path, seed)
    [problem] = problems_of(path)
    assert str(path) in problem
    assert f"units[3] (id={seed['units'][3]['id']})" in problem
    assert "parent 'phong-khong-ton-tai' is not a known unit" in problem


def test_schema_errors_name_the_entry_and_field(tmp_path: Path, seed: dict) -> None:
    seed["datasets"][1]["cadence"] = "hourly"
    del seed["grants"][0]["actions"]
    path = write(tmp_path, seed)
    problems = problems_of(path)
    assert any("datasets[1] (id=ho-so-dich-vu-cong) field 'cadence'" in p for p in problems)
    assert any("grants[0] (id=pub-pa-tt-loc-ninh) field 'actions'" in p and "Field required" in p
               for p in problems)
    assert all(p.startswith(str(path)) for p in problems)


def test_all_cross_reference_problems_are_reported_together(tmp_path: Path, seed: dict) -> None:
    seed["units"].append(dict(seed["units"][-1]))                  # duplicate id and name
    seed["datasets"][0]["owner"] = "ghost"
    seed["datasets"][0]["canonical_version"] = 9
    seed["grants"].append({"id": "sr-bad", "unit": "cong-an-huyen", "dataset": "phan-anh-hien-truong",
                           "actions": ["receive"], "mode": "special-request"})
    seed["grants"].append({"id": "g-bad", "unit": "nobody", "dataset": "nothing", "actions": ["read"]})
    problems = problems_of(write(tmp_path, seed))
    text = "\n".join(problems)
    assert "duplicate unit id" in text
    assert "owner 'ghost' is not a known unit" in text
    assert "canonical_version 9 has no schema" in text
    assert "grants[" in text and "special-request grant needs purpose, expires_at, fields" in text
    assert "unit 'nobody' is not a known unit" in text and "dataset 'nothing' is not a known dataset" in text
    assert len(problems) >= 6


def test_ambiguous_alias_is_refused(tmp_path: Path, seed: dict) -> None:
    seed["units"][4]["aliases"] = ["Lộc An"]
    problems = problems_of(write(tmp_path, seed))
    assert any("alias 'Lộc An' is already used by unit" in p for p in problems)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    assert str(missing) in problems_of(missing)[0]
    broken = tmp_path / "broken.yaml"
    broken.write_text("units: [unclosed", encoding="utf-8")
    assert "not valid YAML" in problems_of(broken)[0]
    listed = write(tmp_path, ["a", "b"], "list.yaml")
    assert "top level must be a mapping" in problems_of(listed)[0]


def test_credentials_problems(tmp_path: Path) -> None:
    creds = write(tmp_path, {"secrets": {"ghost-principal": "x" * 20, "ioc-leader": "short"}},
                  "creds.yaml")
    with pytest.raises(RegistryError) as info:
        load_registry(SEED, creds)
    assert "secrets.ioc-leader: secret must be a string of at least 16 characters" in str(info.value)
    ok = write(tmp_path, {"secrets": {"ghost-principal": "x" * 20}}, "creds2.yaml")
    with pytest.raises(RegistryError) as info:
        load_registry(SEED, ok)
    assert "credentials for unknown principal 'ghost-principal'" in str(info.value)
