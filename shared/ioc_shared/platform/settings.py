"""Service settings from the environment.

Each service has its own prefix (`INGEST_`, `ROUTING_` ...) and falls back to
the common `IOC_` prefix, so one exported environment (`scripts/platform.sh
env`) serves every service while each can still be pointed elsewhere.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import ssl
from pathlib import Path
from typing import ClassVar

from pydantic import SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from ioc_shared.contracts.topics import TopicSpec
from ioc_shared.platform.security import KafkaSecurity, KafkaSecurityError, Mechanism, Protocol

REPO_ROOT = Path(__file__).resolve().parents[3]


def _default_instance() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


_KAFKA_SECURITY_HELP = (
    "IOC_KAFKA_SECURITY_PROTOCOL (SASL_SSL, the default once any is set; or SSL), "
    "IOC_KAFKA_SASL_MECHANISM (SCRAM-SHA-512), IOC_KAFKA_SASL_USER, IOC_KAFKA_SASL_PASSWORD_FILE "
    "(or IOC_KAFKA_SASL_PASSWORD), IOC_KAFKA_CA_FILE, and for mutual TLS "
    "IOC_KAFKA_CLIENT_CERT_FILE with IOC_KAFKA_CLIENT_KEY_FILE")


class KafkaClientSettings(BaseSettings):
    """How clients reach the district cluster: its address and security (`IOC_KAFKA_*`).

    Without any security setting a client refuses to start, unless in development mode
    or with IOC_KAFKA_SECURITY_PROTOCOL=PLAINTEXT set explicitly (a local broker)."""

    model_config = SettingsConfigDict(env_prefix="IOC_", extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:19092"
    # Development mode (IOC_DEV_MODE=1: scripts/up.sh, tests, benchmarks): only then may
    # the credentials file be unset or inside the repository (the development one), and
    # Kafka be reached in clear text without saying so.
    dev_mode: bool = False
    kafka_security_protocol: Protocol | None = None
    kafka_sasl_mechanism: Mechanism = "SCRAM-SHA-512"
    kafka_sasl_user: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_password_file: Path | None = None
    kafka_ca_file: Path | None = None
    kafka_client_cert_file: Path | None = None
    kafka_client_key_file: Path | None = None

    def kafka_security(self) -> KafkaSecurity:
        """The district cluster's security (`KafkaSecurityError` when missing or unsafe)."""
        given = {"sasl_user": self.kafka_sasl_user, "sasl_password": self.kafka_sasl_password,
                 "sasl_password_file": self.kafka_sasl_password_file,
                 "ca_file": self.kafka_ca_file, "client_cert_file": self.kafka_client_cert_file,
                 "client_key_file": self.kafka_client_key_file}
        given = {k: v for k, v in given.items() if v is not None}
        protocol = self.kafka_security_protocol
        if protocol is None and not given:
            if not self.dev_mode:
                raise KafkaSecurityError(
                    "no security settings for the district Kafka cluster: set "
                    f"{_KAFKA_SECURITY_HELP}; or IOC_KAFKA_SECURITY_PROTOCOL=PLAINTEXT "
                    "explicitly for a local broker in clear text, or IOC_DEV_MODE=1 for "
                    "development")
            return KafkaSecurity(protocol="PLAINTEXT", allow_plaintext=True)
        protocol = protocol or "SASL_SSL"
        return KafkaSecurity(protocol=protocol, sasl_mechanism=self.kafka_sasl_mechanism,
                             # clear text only when named (or in development)
                             allow_plaintext=self.kafka_security_protocol is not None
                             or self.dev_mode,
                             **given)

    @model_validator(mode="after")
    def _kafka_security_usable(self) -> KafkaClientSettings:
        """Refuse to start on missing or unsafe settings, or unreadable secret files."""
        try:
            self.kafka_security().client_kwargs()    # reads the password, CA, cert and key
        except KafkaSecurityError:
            raise                                    # no settings: it names them
        except (ValueError, OSError, ssl.SSLError) as exc:
            raise KafkaSecurityError(f"district Kafka security ({_KAFKA_SECURITY_HELP}): "
                                     f"{exc}") from exc
        return self


class ServiceSettings(KafkaClientSettings):
    model_config = SettingsConfigDict(env_prefix="IOC_", extra="ignore")

    service_prefix: ClassVar[str] = "IOC_"
    service_name: ClassVar[str] = "ioc"

    database_url: str = "postgresql://ioc@127.0.0.1:15432/ioc"
    registry_file: Path = REPO_ROOT / "config" / "registry.yaml"
    credentials_file: Path | None = REPO_ROOT / "config" / "credentials.dev.yaml"
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
