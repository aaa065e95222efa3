"""Kafka client security settings, turned into aiokafka keyword arguments.

Both clusters run SASL_SSL in production: SCRAM over TLS with a pinned certificate
authority, optionally a client certificate (mutual TLS; Đ11.3, Đ11.4). The district
cluster's settings are `IOC_KAFKA_*` (`ioc_shared.platform.settings`), the provincial
cluster's sync-province's own. PLAINTEXT (and SASL without TLS) is refused unless
`allow_plaintext` says it was chosen explicitly. Passwords come from a file (preferred:
a mounted secret) or the value itself.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, Literal

from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]


class KafkaSecurityError(ValueError):
    """The security settings are incomplete or unsafe."""


class KafkaSecurity(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    protocol: Protocol = "SASL_SSL"
    sasl_mechanism: Mechanism = "SCRAM-SHA-512"
    sasl_user: str | None = None
    sasl_password: SecretStr | None = None
    sasl_password_file: Path | None = None
    ca_file: Path | None = None
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    allow_plaintext: bool = False

    @model_validator(mode="after")
    def _safe(self) -> KafkaSecurity:
        if self.protocol in ("PLAINTEXT", "SASL_PLAINTEXT") and not self.allow_plaintext:
            raise KafkaSecurityError(f"{self.protocol} sends data in clear: set allow_plaintext "
                                     "only for local development")
        if self.protocol.startswith("SASL") and not self.sasl_user:
            raise KafkaSecurityError(f"{self.protocol} needs a SASL user")
        if self.protocol.startswith("SASL") and not (self.sasl_password or self.sasl_password_file):
            raise KafkaSecurityError(f"{self.protocol} needs a SASL password or password file")
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise KafkaSecurityError("a client certificate needs both its certificate and key file")
        return self

    def password(self) -> str:
        if self.sasl_password_file is not None:
            return self.sasl_password_file.read_text(encoding="utf-8").strip()
        return self.sasl_password.get_secret_value() if self.sasl_password else ""

    def ssl_context(self) -> ssl.SSLContext:
        """TLS 1.2+ with hostname checks, trusting `ca_file` (the system store without it)."""
        context = ssl.create_default_context(
            cafile=str(self.ca_file) if self.ca_file is not None else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.client_cert_file is not None and self.client_key_file is not None:
            context.load_cert_chain(str(self.client_cert_file), str(self.client_key_file))
        return context

    def is_clear_text(self) -> bool:
        return self.protocol in ("PLAINTEXT", "SASL_PLAINTEXT")

    def broker_security(self) -> BaseSecurity | None:
        """The same settings as FastStream's `KafkaBroker(security=...)` takes."""
        tls = self.ssl_context() if self.protocol in ("SSL", "SASL_SSL") else None
        if not self.protocol.startswith("SASL"):
            return BaseSecurity(ssl_context=tls) if tls is not None else None
        sasl = {"SCRAM-SHA-512": SASLScram512, "SCRAM-SHA-256": SASLScram256,
                "PLAIN": SASLPlaintext}[self.sasl_mechanism]
        return sasl(username=self.sasl_user or "", password=self.password(), ssl_context=tls,
                    use_ssl=tls is not None)

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.protocol in ("SSL", "SASL_SSL"):
            kwargs["ssl_context"] = self.ssl_context()
        if self.protocol.startswith("SASL"):
            kwargs.update(sasl_mechanism=self.sasl_mechanism, sasl_plain_username=self.sasl_user,
                          sasl_plain_password=self.password())
        return kwargs
