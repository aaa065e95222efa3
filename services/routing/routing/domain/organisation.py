"""What routing needs to know about the organisation, as plain data.

Built from the registry by `routing.config.organisation_from_registry`; the
domain depends on this small view rather than on the registry loader, so rules
can be tested with a hand-made organisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ContactInfo:
    role: str
    title: str
    name: str


@dataclass(frozen=True)
class Organisation:
    unit_ids: frozenset[str]
    commune_ids: frozenset[str]
    ioc_unit: str
    district_unit: str
    incident_datasets: frozenset[str] = frozenset()
    categories: frozenset[str] = frozenset()
    # Approximate commune centres (lat, lon); areas from coordinates need them.
    commune_centres: dict[str, tuple[float, float]] = field(default_factory=dict)
    contacts: dict[str, tuple[ContactInfo, ...]] = field(default_factory=dict)
    unit_names: dict[str, str] = field(default_factory=dict)
    # Units incidents may be assigned to (registry `handles_incidents`); None: every unit.
    incident_units: frozenset[str] | None = None

    def handles_incidents(self, unit: str) -> bool:
        return unit in self.unit_ids and (self.incident_units is None
                                          or unit in self.incident_units)

    def contacts_of(self, unit: str, roles: tuple[str, ...]) -> list[ContactInfo]:
        return [c for c in self.contacts.get(unit, ()) if c.role in roles]

    def name_of(self, unit: str) -> str:
        return self.unit_names.get(unit, unit)
