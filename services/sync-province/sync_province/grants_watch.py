"""The registry as it is now: reloaded when its file changes or on SIGHUP, so a grant added,
narrowed or revoked takes effect from the next batch on, without a restart, and a dataset
newly flagged `shared_with_province` is forwarded (the pipelines add its stream).

An invalid file fails closed: nothing leaves until the file is valid again (sending
under a registry nobody can read would be sending without a grant).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from ioc_shared.grants import Projection, projection
from ioc_shared.platform.logging import get_logger
from ioc_shared.registry import Registry, RegistryError, load_registry

log = get_logger(__name__)


class RegistryWatcher:
    def __init__(self, path: Path, credentials: Path | None, principal: str) -> None:
        self._path = path
        self._credentials = credentials
        self._principal = principal
        self._stamp: tuple[float, int] | None = None
        self.registry: Registry | None = None
        self.generation = 0
        self.error: str | None = None
        self._forced = False
        self.check()

    def force(self) -> None:
        """SIGHUP: reload at the next check even if the file looks unchanged."""
        self._forced = True

    def _file_stamp(self) -> tuple[float, int] | None:
        try:
            st = os.stat(self._path)
        except OSError:
            return None
        return (st.st_mtime, st.st_size)

    def check(self) -> bool:
        """Reload when the file changed; True when a new registry (or error) took effect."""
        stamp = self._file_stamp()
        if stamp == self._stamp and not self._forced:
            return False
        self._forced = False
        self._stamp = stamp
        try:
            self.registry = load_registry(self._path, self._credentials)
            self.error = None
        except RegistryError as exc:
            self.registry, self.error = None, str(exc)
            log.error("registry invalid: nothing leaves until it is fixed", problems=exc.problems)
        self.generation += 1
        log.info("registry loaded", generation=self.generation, ok=self.error is None)
        return True

    def projection(self, dataset: str, at: datetime | None = None) -> Projection | None:
        """What leaves of `dataset` now: nothing unless it is flagged `shared_with_province`
        (a flag taken back stops it at once, like a revoked grant) and granted."""
        if self.registry is None:
            return None
        spec = self.registry.datasets.get(dataset)
        if spec is None or not spec.shared_with_province:
            return None
        return projection(self.registry, self._principal, dataset, at or datetime.now(UTC))

    def shared_datasets(self) -> list[str]:
        if self.registry is None:
            return []
        return [d.id for d in self.registry.datasets.values() if d.shared_with_province]
