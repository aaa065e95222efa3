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
