"""Distances on the ground, areas from coordinates, and likely duplicates."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True, slots=True)
class Point:
    lat: float
    lon: float


def haversine_m(a: Point, b: Point) -> float:
    """Great-circle distance in metres."""
    phi1, phi2 = math.radians(a.lat), math.radians(b.lat)
    dphi, dlambda = phi2 - phi1, math.radians(b.lon - a.lon)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def nearest_commune(point: Point, centres: Mapping[str, tuple[float, float]]
                    ) -> tuple[str, float] | None:
    """(commune id, distance in m) of the nearest configured centre, if any is configured."""
    best: tuple[str, float] | None = None
    for commune, (lat, lon) in centres.items():
        distance = haversine_m(point, Point(lat, lon))
        if best is None or distance < best[1]:
            best = (commune, distance)
    return best


def bounding_box(point: Point, radius_m: float) -> tuple[float, float, float, float]:
    """(min_lat, min_lon, max_lat, max_lon) containing the circle; a cheap index prefilter."""
    dlat = math.degrees(radius_m / EARTH_RADIUS_M)
    cos_lat = max(0.01, math.cos(math.radians(point.lat)))
    dlon = math.degrees(radius_m / (EARTH_RADIUS_M * cos_lat))
    return point.lat - dlat, point.lon - dlon, point.lat + dlat, point.lon + dlon


# Grid cells for the duplicate search: 0.01 degree (about 1.1 km) squares, numbered as the
# `cell` column of routing's incidents table computes them (migration 0003).
CELLS_PER_DEGREE = 100


def _cell(row: int, column: int) -> int:
    return (row + 90 * CELLS_PER_DEGREE) * 100_000 + column + 180 * CELLS_PER_DEGREE


def cell_of(lat: float, lon: float) -> int:
    return _cell(math.floor(lat * CELLS_PER_DEGREE), math.floor(lon * CELLS_PER_DEGREE))


def cells_of_box(min_lat: float, min_lon: float, max_lat: float, max_lon: float) -> list[int]:
    """Every cell a point inside the box can be in (one to four for a 200 m radius)."""
    return [_cell(row, column)
            for row in range(math.floor(min_lat * CELLS_PER_DEGREE),
                             math.floor(max_lat * CELLS_PER_DEGREE) + 1)
            for column in range(math.floor(min_lon * CELLS_PER_DEGREE),
                                math.floor(max_lon * CELLS_PER_DEGREE) + 1)]


@dataclass(frozen=True, slots=True)
class DuplicateCandidate:
    incident_id: str
    category: str
    location: Point
    reported_at: datetime


@dataclass(frozen=True, slots=True)
class LikelyDuplicate:
    incident_id: str
    distance_m: float
    apart: timedelta


class CandidateIndex:
    """Candidates bucketed by category and grid cell, so each lookup checks only neighbours.

    The cell is at least as large as the search radius, so every candidate within
    the radius lies in the 3 x 3 cells around the point.
    """

    def __init__(self, radius_m: float) -> None:
        self._cell_deg = max(math.degrees(radius_m / EARTH_RADIUS_M) * 2.0, 1e-4)
        self._cells: dict[tuple[str, int, int], list[DuplicateCandidate]] = {}

    def _cell(self, point: Point) -> tuple[int, int]:
        # Longitude cells are as wide in degrees as latitude ones: at Vietnam's latitudes a
        # degree of longitude is shorter, so the neighbourhood still covers the radius.
        return math.floor(point.lat / self._cell_deg), math.floor(point.lon / self._cell_deg)

    def add(self, candidate: DuplicateCandidate) -> None:
        row, col = self._cell(candidate.location)
        self._cells.setdefault((candidate.category, row, col), []).append(candidate)

    def near(self, category: str, point: Point) -> list[DuplicateCandidate]:
        row, col = self._cell(point)
        found: list[DuplicateCandidate] = []
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                found += self._cells.get((category, row + dr, col + dc), ())
        return found


def likely_duplicates(category: str, location: Point, reported_at: datetime,
                      candidates: Iterable[DuplicateCandidate], *, radius_m: float,
                      window: timedelta, limit: int) -> list[LikelyDuplicate]:
    """Open incidents of the same category, close in space and time, nearest first."""
    found = []
    for c in candidates:
        if c.category != category:
            continue
        apart = abs(c.reported_at - reported_at)
        if apart > window:
            continue
        distance = haversine_m(location, c.location)
        if distance <= radius_m:
            found.append(LikelyDuplicate(c.incident_id, distance, apart))
    found.sort(key=lambda d: (d.distance_m, d.apart))
    return found[:limit]
