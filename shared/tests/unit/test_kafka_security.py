"""The district cluster's security settings (`IOC_KAFKA_*`) and the client factory."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from faststream.security import BaseSecurity, SASLScram512
from ioc_shared.platform import kafka
from ioc_shared.platform.kafka import (
    client_options,
    district_security,
    make_admin,
    make_broker,
    make_consumer,
    use_district_security,
)
from ioc_shared.platform.security import KafkaSecurity
from ioc_shared.platform.settings import KafkaClientSettings, ServiceSettings
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

_VARIABLES = ("IOC_KAFKA_SECURITY_PROTOCOL", "IOC_KAFKA_SASL_MECHANISM", "IOC_KAFKA_SASL_USER",
              "IOC_KAFKA_SASL_PASSWORD", "IOC_KAFKA_SASL_PASSWORD_FILE", "IOC_KAFKA_CA_FILE",
              "IOC_KAFKA_CLIENT_CERT_FILE", "IOC_KAFKA_CLIENT_KEY_FILE")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No Kafka security variable, not in development mode; the process default restored."""
    for name in (*_VARIABLES, "IOC_DEV_MODE"):
        monkeypatch.delenv(name, raising=False)
    saved = kafka._district_security
    use_district_security(None)
    yield monkeypatch
    use_district_security(saved)


def _pki(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A certificate authority and a client certificate it signed (PEM files)."""
    now = dt.datetime.now(dt.UTC)

    def cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
             signer: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
        return (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=1))
                .not_valid_after(now + dt.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                .sign(signer, hashes.SHA256()))

    ca_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "client.pem", tmp_path / "client.key"
    ca_file.write_bytes(cert("test-ca", ca_key, "test-ca", ca_key, True).public_bytes(
        serialization.Encoding.PEM))
    cert_file.write_bytes(cert("ingest", client_key, "test-ca", ca_key, False).public_bytes(
        serialization.Encoding.PEM))
    key_file.write_bytes(client_key.private_bytes(serialization.Encoding.PEM,
                                                  serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return ca_file, cert_file, key_file


def test_outside_dev_mode_no_security_settings_refuse_to_start_naming_the_variables(
        clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError) as refused:
        KafkaClientSettings()
    message = str(refused.value)
    assert "no security settings for the district Kafka cluster" in message
    for name in ("IOC_KAFKA_SECURITY_PROTOCOL", "IOC_KAFKA_SASL_USER", "IOC_KAFKA_SASL_PASSWORD_FILE",
                 "IOC_KAFKA_CA_FILE", "IOC_KAFKA_CLIENT_CERT_FILE", "IOC_DEV_MODE"):
        assert name in message
    # A service's settings refuse the same way (the credentials file is fine here).
    with pytest.raises(ValidationError, match="district Kafka cluster"):
        ServiceSettings(credentials_file=Path("/etc/ioc/credentials.yaml"))
    # ... and so does a client made without a service (tools, benchmarks).
    with pytest.raises(ValidationError, match="district Kafka cluster"):
        client_options()


def test_clear_text_only_when_explicit_or_in_dev_mode(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("IOC_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    assert KafkaClientSettings().kafka_security().client_kwargs() == {
        "security_protocol": "PLAINTEXT"}
    clean_env.delenv("IOC_KAFKA_SECURITY_PROTOCOL")
    clean_env.setenv("IOC_DEV_MODE", "1")
    assert KafkaClientSettings().kafka_security().protocol == "PLAINTEXT"
    assert client_options()["security_protocol"] == "PLAINTEXT"


def test_a_user_alone_means_sasl_ssl_and_wants_a_password(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("IOC_KAFKA_SASL_USER", "ingest")
    with pytest.raises(ValidationError, match="needs a SASL password"):
        KafkaClientSettings()
    clean_env.setenv("IOC_KAFKA_SASL_PASSWORD", "from-the-environment")
    security = KafkaClientSettings().kafka_security()
    assert (security.protocol, security.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    kwargs = security.client_kwargs()
    assert kwargs["sasl_plain_password"] == "from-the-environment"
    assert kwargs["ssl_context"].verify_mode == ssl.CERT_REQUIRED
    assert kwargs["ssl_context"].check_hostname
    assert "from-the-environment" not in repr(KafkaClientSettings())   # a secret stays one


def test_password_file_is_read_and_a_missing_one_refuses_to_start(
        clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("IOC_KAFKA_SASL_USER", "ingest")
    clean_env.setenv("IOC_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "absent"))
    with pytest.raises(ValidationError, match=r"district Kafka security.*absent"):
        KafkaClientSettings()
    (tmp_path / "absent").write_text("mounted-secret\n", encoding="utf-8")
    clean_env.setenv("IOC_KAFKA_SASL_PASSWORD", "ignored: the file wins")
    kwargs = KafkaClientSettings().kafka_security().client_kwargs()
    assert kwargs["sasl_plain_username"] == "ingest"
    assert kwargs["sasl_plain_password"] == "mounted-secret"


def test_sasl_without_tls_is_clear_text_too(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("IOC_KAFKA_SASL_USER", "ingest")
    clean_env.setenv("IOC_KAFKA_SASL_PASSWORD", "pw")
    clean_env.setenv("IOC_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")   # named: accepted
    assert "ssl_context" not in KafkaClientSettings().kafka_security().client_kwargs()
    clean_env.setenv("IOC_KAFKA_SECURITY_PROTOCOL", "TLS")
    with pytest.raises(ValidationError):
        KafkaClientSettings()


def test_mutual_tls_kwargs_load_the_ca_and_client_certificate(
        clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca_file, cert_file, key_file = _pki(tmp_path)
    clean_env.setenv("IOC_KAFKA_SECURITY_PROTOCOL", "SSL")
    clean_env.setenv("IOC_KAFKA_CA_FILE", str(ca_file))
    clean_env.setenv("IOC_KAFKA_CLIENT_CERT_FILE", str(cert_file))
    with pytest.raises(ValidationError, match="both its certificate and key"):
        KafkaClientSettings()
    clean_env.setenv("IOC_KAFKA_CLIENT_KEY_FILE", str(ca_file))    # not the certificate's key
    with pytest.raises(ValidationError, match="district Kafka security"):
        KafkaClientSettings()
    clean_env.setenv("IOC_KAFKA_CLIENT_KEY_FILE", str(key_file))
    kwargs = KafkaClientSettings().kafka_security().client_kwargs()
    assert kwargs["security_protocol"] == "SSL" and "sasl_mechanism" not in kwargs
    context: ssl.SSLContext = kwargs["ssl_context"]
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "test-ca"),),)]


async def test_every_factory_client_carries_the_district_security(
        clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ca_file, _, _ = _pki(tmp_path)
    use_district_security(KafkaSecurity(sasl_user="ingest", sasl_password="pw", ca_file=ca_file))
    assert district_security().sasl_user == "ingest"
    options = client_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_plain_username"] == "ingest" and options["retry_backoff_ms"] >= 500
    consumer = make_consumer("t", bootstrap="127.0.0.1:1", group_id=None)
    assert consumer._client._security_protocol == "SASL_SSL"
    assert consumer._client._sasl_plain_username == "ingest"
    await consumer.stop()
    admin = make_admin("127.0.0.1:1", client_id="t", request_timeout_ms=3000)
    assert admin._client._security_protocol == "SASL_SSL"
    await admin.close()
    with pytest.raises(ValueError, match="auto-commit"):
        make_consumer("t", bootstrap="127.0.0.1:1", enable_auto_commit=True)
    # FastStream's broker gets the same settings as its `security=` object.
    broker = make_broker("127.0.0.1:1", service="t")
    params = broker._connection_kwargs
    assert params["security_protocol"] == "SASL_SSL"
    assert params["sasl_mechanism"] == "SCRAM-SHA-512"
    assert params["sasl_plain_username"] == "ingest" and params["sasl_plain_password"] == "pw"
    assert params["ssl_context"].check_hostname
    assert params["enable_idempotence"] is True and params["acks"] in ("all", -1)


def test_broker_security_maps_each_protocol() -> None:
    assert KafkaSecurity(protocol="PLAINTEXT", allow_plaintext=True).broker_security() is None
    tls = KafkaSecurity(protocol="SSL").broker_security()
    assert type(tls) is BaseSecurity and tls.use_ssl and tls.ssl_context is not None
    scram = KafkaSecurity(sasl_user="u", sasl_password="p").broker_security()
    assert isinstance(scram, SASLScram512) and scram.use_ssl and scram.username == "u"
    clear = KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_user="u", sasl_password="p",
                          allow_plaintext=True).broker_security()
    assert isinstance(clear, SASLScram512) and not clear.use_ssl and clear.ssl_context is None


class _DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_", extra="ignore")
    service_prefix = "DEMO_"


def test_a_service_can_have_its_own_kafka_user(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("IOC_KAFKA_SASL_USER", "ioc")
    clean_env.setenv("IOC_KAFKA_SASL_PASSWORD", "common")
    clean_env.setenv("DEMO_KAFKA_SASL_USER", "demo")
    settings = _DemoSettings(credentials_file=Path("/etc/ioc/credentials.yaml"))
    security = settings.kafka_security()
    assert (security.sasl_user, security.password()) == ("demo", "common")
