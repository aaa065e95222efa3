"""`project_for_grant`: the one projection of a record for a grant (ingest's special-request
streams, sync-province's mirror), in particular a grant without `fields`."""

from __future__ import annotations

from typing import Any

import pytest
from ioc_shared.grants import fields_of_grant, project_for_grant
from ioc_shared.platform.settings import REPO_ROOT
from ioc_shared.registry import Dataset, Grant, Registry, SharingMode, load_registry

DATASET = "phan-anh-hien-truong"
SPECIAL = "sr-cong-an-pa-2026"


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(REPO_ROOT / "config" / "registry.yaml")


@pytest.fixture
def dataset(registry: Registry) -> Dataset:
    return registry.datasets[DATASET]


@pytest.fixture
def special(registry: Registry) -> Grant:
    return next(g for g in registry.grants if g.id == SPECIAL)


def record(dataset: Dataset) -> dict[str, Any]:
    """A value for every canonical field, in the schema's order, and one outside it."""
    schema = dataset.schema_for(dataset.canonical_version)
    assert schema is not None
    return {**{name: f"v-{name}" for name in schema.fields}, "reporter_ref": "r-1"}


def test_a_special_request_grant_gives_its_named_fields_in_the_records_order(
        special: Grant, dataset: Dataset) -> None:
    assert special.mode is SharingMode.SPECIAL_REQUEST and special.fields
    named = special.model_copy(update={"fields": tuple(reversed([*special.fields,
                                                                 "reporter_phone"]))})
    whole = record(dataset)
    out = project_for_grant(named, dataset, whole)
    # a personal field leaves when the grant names it; the record's order, not the grant's
    assert list(out) == [n for n in whole if n in {*special.fields, "reporter_phone"}]
    assert out["reporter_phone"] == "v-reporter_phone"
    # no schema is needed for a grant that names its fields (ingest passes none)
    assert project_for_grant(named, None, whole) == out


def test_a_special_request_grant_without_fields_gives_nothing(special: Grant,
                                                              dataset: Dataset) -> None:
    bare = special.model_copy(update={"fields": None})
    assert fields_of_grant(bare, dataset) == frozenset()
    assert project_for_grant(bare, dataset, record(dataset)) == {}
    assert project_for_grant(bare, None, record(dataset)) == {}
    assert project_for_grant(special.model_copy(update={"fields": ()}), dataset,
                             record(dataset)) == {}


def test_a_default_grant_without_fields_gives_the_non_personal_schema_fields(
        special: Grant, dataset: Dataset) -> None:
    default = Grant(id="g-default", unit=special.unit, dataset=DATASET, actions=special.actions)
    out = project_for_grant(default, dataset, record(dataset))
    schema = dataset.schema_for(dataset.canonical_version)
    assert schema is not None
    assert set(out) == {n for n, f in schema.fields.items() if not f.personal}
    assert "reporter_phone" not in out and "reporter_ref" not in out   # personal; not in schema
    assert project_for_grant(default, None, record(dataset)) == {}      # no schema: nothing
