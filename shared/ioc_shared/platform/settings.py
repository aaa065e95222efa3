"""Service settings from the environment.

Each service has its own prefix (`INGEST_`, `ROUTING_` ...) and falls back to
the common `IOC_` prefix, so one exported environment (`scripts/platform.sh
env`) serves every service while each can still be pointed elsewhere.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path
from typing import ClassVar

from pydantic import model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from ioc_shared.contracts.topics import TopicSpec

REPO_ROOT = Path(__file__).resolve().parents[3]


def _default_instance() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IOC_", extra="ignore")

    service_prefix: ClassVar[str] = "IOC_"
    service_name: ClassVar[str] = "ioc"

    kafka_bootstrap: str = "127.0.0.1:19092"
    database_url: str = "postgresql://ioc@127.0.0.1:15432/ioc"
    registry_file: Path = REPO_ROOT / "config" / "registry.yaml"
    credentials_file: Path | None = REPO_ROOT / "config" / "credentials.dev.yaml"
    # Development mode (IOC_DEV_MODE=1: scripts/up.sh, tests, benchmarks): only then may
    # the credentials file be unset or inside the repository (the development one).
    dev_mode: bool = False
    otlp_endpoint: str | None = None
    log_level: str = "INFO"
    http_host: str = "127.0.0.1"
    http_port: int = 0
    topic_replication: int = 1
    instance_id: str = _default_instance()
    db_pool_size: int = 10
    # SIGTERM ends the service within this many seconds, even with a dependency down.
    shutdown_grace_s: float = 10.0
    # Prefix for every topic name: isolates tests and benchmarks that share a
    # broker ("" in production, so names match the published contract).
    topic_namespace: str = ""

    @model_validator(mode="after")
    def _credentials_outside_the_repository(self) -> ServiceSettings:
        """Outside development mode a service refuses to start on the development
        credentials (public in the repository) or on none."""
        if self.dev_mode:
            return self
        path = self.credentials_file
        if path is None:
            raise ValueError(
                "no credentials file: set IOC_CREDENTIALS_FILE to the deployment's credentials "
                "(kept outside the repository), or IOC_DEV_MODE=1 for development")
        if path.resolve().is_relative_to(REPO_ROOT):
            raise ValueError(
                f"credentials file {path} is inside the repository (public development "
                "credentials): set IOC_CREDENTIALS_FILE to a file outside it, or IOC_DEV_MODE=1 "
                "for development")
        return self

    def topic(self, spec: TopicSpec) -> TopicSpec:
        """The spec as this deployment names it (namespace applied)."""
        if not self.topic_namespace:
            return spec
        return dataclasses.replace(spec, name=f"{self.topic_namespace}.{spec.name}")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        own = EnvSettingsSource(settings_cls, env_prefix=cls.service_prefix)
        common = EnvSettingsSource(settings_cls, env_prefix="IOC_")
        return (init_settings, own, common, file_secret_settings)
