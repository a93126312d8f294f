"""Keys on disk: the deployment's keyring and each signer's private keys, re-read while workers run.

Re-reading them lets keys rotate without restarts."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Iterable

from contracts import REGISTRY, Registry
from contracts.signing import ED25519, Keyring, PrivateKey, SigningKeyError, TrustedKey

__all__ = [
    "OPERATOR_SIGNER",
    "REPLAY_SIGNER",
    "UPSTREAM_SIGNERS",
    "KeyStore",
    "init_keys",
    "keyring_path",
    "private_dir",
    "rotate_key",
    "topics_signed_by",
    "trust_key",
]

# Signers outside the services: the storefront, the warehouse (both played by `fleet demo`) and the HTTP gateway
# publish upstream topics;
# `replay` is the operators' key for `fleet dlq replay`, which puts dead letters back on their original topics;
# `operator` signs the operators' commands on fleet.control.v1 (`fleet pause`, `resume`, `replay`).
UPSTREAM_SIGNERS = ("storefront", "warehouse", "gateway", "replay", "operator")
OPERATOR_SIGNER = "operator"
UPSTREAM_OWNER = "storefront"
REPLAY_SIGNER = "replay"
_EARLIEST = datetime.min.replace(tzinfo=UTC)  # how a key without `not_before` sorts


def keyring_path(keys_dir: Path) -> Path:
    return Path(keys_dir) / "keyring.json"


def private_dir(keys_dir: Path, signer: str) -> Path:
    return Path(keys_dir) / "private" / signer


def topics_signed_by(signer: str, registry: Registry = REGISTRY) -> list[str]:
    """A service signs the topics it owns; the gateway signs what upstream systems own;
    `replay` may sign every topic."""
    if signer == REPLAY_SIGNER:
        return [t.name for t in registry]
    owner = UPSTREAM_OWNER if signer == "gateway" else signer
    # A consumer re-signs the records it sends to retry, on the retry topics of what it consumes and nowhere else.
    retries = [name for t in registry.consumed_by(signer) for name in t.retry_topics]
    return [t.name for t in registry.owned_by(owner)] + retries


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _new_kid(signer: str, now: datetime) -> str:
    import secrets

    return f"{signer}-{now:%Y%m%d%H%M%S}-{secrets.token_hex(2)}"


def _load_ring(keys_dir: Path) -> Keyring:
    path = keyring_path(keys_dir)
    return Keyring.load(path) if path.exists() else Keyring()


def init_keys(
    keys_dir: Path, signers: Iterable[str], *, registry: Registry = REGISTRY, alg: str = ED25519
) -> list[str]:
    """Creates a key (Ed25519 by default, or HMAC-SHA256: a shared secret in the keyring, ~50x cheaper to verify, but
    every verifier could then sign too) for every signer that has none yet and trusts it in the ring; idempotent.

    The topics of the signers' existing keys are brought in line with the registry too, so a new topic or consumer
    needs no manual trust step.
    """
    ring, created = _load_ring(keys_dir), []
    signers = list(signers)
    for signer in signers:
        folder = private_dir(keys_dir, signer)
        if folder.exists() and any(folder.glob("*.json")):
            continue
        now = _now()
        key = PrivateKey.generate(_new_kid(signer, now), alg)
        key.save(folder / f"{key.kid}.json")
        ring = ring.with_key(key.public(topics_signed_by(signer, registry), owner=signer))
        created.append(key.kid)
    for trusted in list(ring.keys.values()):
        if trusted.owner in signers:
            ring = ring.with_key(replace(trusted, topics=frozenset(topics_signed_by(trusted.owner, registry))))
    ring.save(keyring_path(keys_dir))
    return created


def rotate_key(
    keys_dir: Path,
    signer: str,
    *,
    grace: timedelta = timedelta(days=1),
    warmup: timedelta = timedelta(seconds=15),
    registry: Registry = REGISTRY,
) -> tuple[str, list[str]]:
    """Adds a new key for `signer`, used from `warmup` on (every worker has reloaded the ring by then),
    and keeps the older keys verify-only until `grace` from now. Returns the new kid and the retired ones."""
    ring, now = _load_ring(keys_dir), _now()
    old = [k for k in ring.keys.values() if k.owner == signer and (k.not_after is None or k.not_after > now)]
    if not old:
        raise SigningKeyError(f"{signer} has no key to rotate; run `fleet keys init` first")
    key = PrivateKey.generate(_new_kid(signer, now), ED25519, not_before=now + warmup)
    key.save(private_dir(keys_dir, signer) / f"{key.kid}.json")
    ring = ring.with_key(key.public(topics_signed_by(signer, registry), owner=signer))
    for retired in old:
        ring = ring.with_key(replace(retired, not_after=now + warmup + grace))
    ring.save(keyring_path(keys_dir))
    return key.kid, [k.kid for k in old]


def trust_key(
    keys_dir: Path,
    kid: str,
    alg: str,
    material_file: Path,
    topics: list[str],
    *,
    owner: str = "",
    not_after: datetime | None = None,
    replace_existing: bool = False,
    registry: Registry = REGISTRY,
) -> TrustedKey:
    """Lets an external publisher in: its public key (PEM) or HMAC secret file, for the named topics only."""
    if not replace_existing and _load_ring(keys_dir).get(kid) is not None:
        raise SigningKeyError(f"the keyring already trusts a key {kid!r}; pass replace to change it")
    for topic in topics:
        registry.named(topic)  # an unknown topic is an error, not a silent no-op
    text = Path(material_file).read_text().strip()
    entry = {
        "kid": kid,
        "alg": alg,
        "topics": topics,
        "owner": owner or kid,
        "not_after": not_after.isoformat() if not_after else None,
    }
    entry |= {"public_key": text} if alg == ED25519 else {"secret": text}
    trusted = TrustedKey.from_json(entry)
    ring = _load_ring(keys_dir)
    ring.with_key(trusted).save(keyring_path(keys_dir))
    return trusted


class KeyStore:
    """The keyring and one signer's private keys, re-read from disk when their files change.

    A worker calls `keyring()` and `signer()` per message; the disk is looked at no more than every `check_every_s`.
    """

    def __init__(self, ring_file: Path, signer_dir: Path | None = None, *, check_every_s: float = 2.0) -> None:
        self.ring_file = Path(ring_file)
        self.signer_dir = Path(signer_dir) if signer_dir else None
        self.check_every_s = check_every_s
        self._lock = threading.Lock()
        self._checked_at = 0.0
        self._stamp: tuple = ()
        self._ring = Keyring()
        self._keys: list[PrivateKey] = []
        # The signer chosen at the current time, and until when (time.time()) that choice holds: every emitted event
        # asks, and choosing costs more than the signature itself with HMAC keys.
        self._chosen: tuple[PrivateKey, float] | None = None
        self._refresh(force=True)

    @classmethod
    def for_signer(cls, keys_dir: Path, signer: str, **options) -> KeyStore:
        return cls(keyring_path(keys_dir), private_dir(keys_dir, signer), **options)

    def keyring(self) -> Keyring:
        self._refresh()
        return self._ring

    def signer(self, now: datetime | None = None) -> PrivateKey:
        """The newest private key already in use (its `not_before` passed)."""
        self._refresh()
        chosen = self._chosen
        if now is None and chosen is not None and time.time() < chosen[1]:
            return chosen[0]
        at = now or datetime.now(UTC)
        usable = [k for k in self._keys if k.not_before is None or k.not_before <= at]
        if not usable:
            raise SigningKeyError(f"no usable signing key in {self.signer_dir}; run `fleet keys init`")
        newest = max(usable, key=lambda k: (k.not_before or _EARLIEST, k.kid))
        if now is None:  # the choice holds until a pending key's `not_before` passes, or the files change
            pending = [k.not_before.timestamp() for k in self._keys if k.not_before is not None and k.not_before > at]
            self._chosen = (newest, min(pending, default=math.inf))
        return newest

    def _files_stamp(self) -> tuple:
        files = [self.ring_file] + (
            sorted(self.signer_dir.glob("*.json")) if self.signer_dir and self.signer_dir.exists() else []
        )
        return tuple((str(f), f.stat().st_mtime_ns) for f in files if f.exists())

    def _refresh(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._checked_at < self.check_every_s:
            return
        with self._lock:
            self._checked_at = time.monotonic()
            stamp = self._files_stamp()
            if stamp == self._stamp and not force:
                return
            if not self.ring_file.exists():
                raise SigningKeyError(f"no keyring at {self.ring_file}; run `fleet keys init`")
            self._ring = Keyring.load(self.ring_file)
            if self.signer_dir and self.signer_dir.exists():
                self._keys = [PrivateKey.load(f) for f in sorted(self.signer_dir.glob("*.json"))]
            self._stamp = stamp
            self._chosen = None
