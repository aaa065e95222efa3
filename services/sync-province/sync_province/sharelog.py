"""Signed checkpoints of the share log's head (Ed25519), and verification of the chain.

The chain makes any edit or removal inside the log visible; a signed checkpoint held by
the province makes a rewrite of the whole log (or a cut of its tail) visible too, as a
Certificate Transparency signed tree head does.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync_province.domain import ChainProblem, checkpoint_message, verify_chain
from sync_province.repository import Repository


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The signing key; made (0600) on first use for local runs, provisioned in production."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an Ed25519 private key")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key


def public_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw).hex()


def sign_checkpoint(key: Ed25519PrivateKey, district: str, seq: int, head_hash: str) -> dict[str, Any]:
    signed_at = datetime.now(UTC).isoformat()
    signature = key.sign(checkpoint_message(district, seq, head_hash, signed_at)).hex()
    return {"type": "sync-province.share-log.checkpoint", "district": district, "head_seq": seq,
            "head_hash": head_hash, "signed_at": signed_at, "public_key": public_hex(key),
            "signature": signature}


def checkpoint_valid(district: str, checkpoint: dict[str, Any], trusted_key_hex: str) -> bool:
    if checkpoint["public_key"] != trusted_key_hex:
        return False
    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(trusted_key_hex))
    try:
        key.verify(bytes.fromhex(checkpoint["signature"]), checkpoint_message(
            district, int(checkpoint["head_seq"]), checkpoint["head_hash"], checkpoint["signed_at"]))
    except (InvalidSignature, ValueError):
        return False
    return True


async def verify_log(repo: Repository, district: str, trusted_key_hex: str) -> list[ChainProblem]:
    """Every problem of the chain and of its checkpoints (empty: the log verifies)."""
    entries = await repo.entries()
    problems = verify_chain(entries)
    by_seq = {int(e["seq"]): e for e in entries}
    last = max(by_seq, default=0)
    for cp in await repo.checkpoints():
        seq = int(cp["head_seq"])
        if not checkpoint_valid(district, cp, trusted_key_hex):
            problems.append(ChainProblem(seq, "checkpoint signature does not verify"))
        if seq > last:
            problems.append(ChainProblem(seq, f"checkpoint covers entry {seq} but the log ends at "
                                              f"{last} (truncated)"))
        elif seq > 0 and by_seq.get(seq, {}).get("entry_hash") != cp["head_hash"]:
            problems.append(ChainProblem(seq, "entry differs from the signed checkpoint"))
    return problems


async def checkpoint_now(repo: Repository, key: Ed25519PrivateKey, district: str,
                         targets: list[Any]) -> dict[str, Any] | None:
    """Sign the head when it moved since the last checkpoint and send it to every target
    (best effort: a target that is away gets the next one)."""
    seq, head_hash = await repo.head()
    if seq == 0 or seq <= await repo.last_checkpoint_seq():
        return None
    checkpoint = sign_checkpoint(key, district, seq, head_hash)
    sent: list[str] = []
    for target in targets:
        try:
            await target.send_checkpoint(checkpoint)
            sent.append(target.name)
        except Exception:  # a checkpoint that did not leave is re-made with the next head
            continue
    await repo.add_checkpoint(seq, head_hash, checkpoint["signed_at"], checkpoint["public_key"],
                              checkpoint["signature"], sent)
    return checkpoint
