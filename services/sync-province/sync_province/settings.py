"""Settings: `SYNC_PROVINCE_*`, falling back to `IOC_*` (see ioc_shared.platform.settings)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from ioc_shared.contracts.topics import REPORTING_PUBLISHED
from ioc_shared.platform.security import KafkaSecurity
from ioc_shared.platform.settings import REPO_ROOT, ServiceSettings
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict


class SyncSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="SYNC_PROVINCE_", extra="ignore")
    service_prefix: ClassVar[str] = "SYNC_PROVINCE_"
    service_name: ClassVar[str] = "sync-province"

    district: str = "loc-ninh"                      # origin IOC id in provenance headers
    province_principal: str = "ioc-binh-phuoc-sync"  # whose grants decide what leaves
    targets: str = "kafka"                           # comma list: kafka, http
    # Records of datasets must carry `ioc-producer: ingest` (what ingest produced).
    require_producer_header: bool = True
    # Event topics forwarded as they are, with the envelope types forwarded from them.
    # Event topics forwarded besides the datasets: reporting's published reports.
    event_topics: str = REPORTING_PUBLISHED.name
    event_types: str = "report.published"
    # Prefix of every topic this service writes on the province's cluster (tests add a namespace).
    province_topic_prefix: str = ""                  # default: the district id

    province_kafka_bootstrap: str = "127.0.0.1:19094"
    province_kafka_protocol: str = "SASL_SSL"
    province_kafka_sasl_mechanism: str = "SCRAM-SHA-512"
    province_kafka_sasl_user: str | None = None
    province_kafka_sasl_password: SecretStr | None = None
    province_kafka_sasl_password_file: Path | None = None
    province_kafka_ca_file: Path | None = None
    province_kafka_client_cert_file: Path | None = None
    province_kafka_client_key_file: Path | None = None
    province_kafka_allow_plaintext: bool = False

    gateway_url: str = "https://127.0.0.1:18443"
    gateway_token: SecretStr | None = None
    gateway_token_file: Path | None = None
    gateway_ca_file: Path | None = None
    gateway_client_cert_file: Path | None = None
    gateway_client_key_file: Path | None = None
    gateway_timeout_s: float = 10.0

    batch_records: int = 1000
    retry_max_wait_s: float = 30.0
    registry_check_s: float = 0.5
    status_interval_s: float = 10.0
    checkpoint_interval_s: float = 300.0
    reconcile_interval_s: float = 3600.0
    reconcile_days: int = 2
    unreachable_after_s: float = 60.0
    retention_margin_s: float = 6 * 3600.0
    retention_check_s: float = 60.0
    signing_key_file: Path = REPO_ROOT / ".run" / "sync-province" / "share-log-ed25519.pem"
    schema_name: str = "sync_province"

    def target_kinds(self) -> list[str]:
        return [t.strip() for t in self.targets.split(",") if t.strip()]

    def event_topic_names(self) -> list[str]:
        return [t.strip() for t in self.event_topics.split(",") if t.strip()]

    def event_type_names(self) -> frozenset[str]:
        return frozenset(t.strip() for t in self.event_types.split(",") if t.strip())

    def topic_prefix(self) -> str:
        return self.province_topic_prefix or self.district

    def province_security(self) -> KafkaSecurity:
        return KafkaSecurity.model_validate({
            "protocol": self.province_kafka_protocol,
            "sasl_mechanism": self.province_kafka_sasl_mechanism,
            "sasl_user": self.province_kafka_sasl_user,
            "sasl_password": self.province_kafka_sasl_password,
            "sasl_password_file": self.province_kafka_sasl_password_file,
            "ca_file": self.province_kafka_ca_file,
            "client_cert_file": self.province_kafka_client_cert_file,
            "client_key_file": self.province_kafka_client_key_file,
            "allow_plaintext": self.province_kafka_allow_plaintext,
        })

    def gateway_token_value(self) -> str | None:
        if self.gateway_token_file is not None:
            return self.gateway_token_file.read_text(encoding="utf-8").strip()
        return self.gateway_token.get_secret_value() if self.gateway_token else None
