"""The fast string event ids are exactly the shared contract's deterministic event ids."""

from __future__ import annotations

import random

from ingest.domain.ids import event_id, event_ids_of
from ioc_shared.contracts.envelope import deterministic_event_id


def test_event_id_equals_the_contracts_deterministic_event_id() -> None:
    rng = random.Random(3)
    samples = [("ingest.record.accepted", "xa-loc-an", "phan-anh-hien-truong", "PA-1", "ab" * 16),
               ("ingest.record.shared", "6f0a3c1e-9b7d-4c52-8a61-3d2e1f0b7c44", "sr-1"), ("",),
               ("Lộc Ninh", "\x1f", "")]
    samples += [tuple(rng.randbytes(rng.randrange(0, 40)).decode("latin-1")
                      for _ in range(rng.randrange(1, 6))) for _ in range(3000)]
    for parts in samples:
        assert event_id(*parts) == str(deterministic_event_id(*parts)), parts
        if len(parts) > 1:
            assert event_ids_of(parts[0])("\x1f".join(parts[1:])) == event_id(*parts), parts


def test_prepared_hmac_equals_hmac_sha256() -> None:
    import hmac

    from ingest.domain.submission import hmac_hex, hmac_key

    rng = random.Random(5)
    for _ in range(500):
        secret = rng.randbytes(rng.choice([0, 1, 25, 63, 64, 65, 100, 200]))
        body = rng.randbytes(rng.randrange(0, 3000))
        assert hmac_hex(hmac_key(secret), body) == hmac.digest(secret, body, "sha256").hex()


def test_prepared_pseudonym_equals_the_registrys_reporter_ref() -> None:
    from ingest.domain.submission import hmac_key, pseudonym
    from ioc_shared.registry import reporter_ref

    rng = random.Random(7)
    samples = [(b"k" * 16, "xa-loc-an", "phan-anh-hien-truong", ("0912345678",)),
               (b"dev-pseudonym-key-0001", "tt-loc-ninh", "ds", ("", "Nguyễn Văn A")),
               (b"x" * 80, "u", "d", ())]
    samples += [(rng.randbytes(rng.choice([16, 63, 64, 65, 100])), "u", "d",
                 tuple(rng.randbytes(rng.randrange(0, 30)).decode("latin-1")
                       for _ in range(rng.randrange(0, 4)))) for _ in range(500)]
    for key, unit, dataset, values in samples:
        assert pseudonym(hmac_key(key), unit, dataset, values) == reporter_ref(
            key, unit, dataset, values), (unit, values)
