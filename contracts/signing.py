"""Signatures of wire format v1 (pure code).

The signed input, Ed25519 and HMAC-SHA256 keys, the keyring, and record verification."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Iterable, Mapping

import nacl.exceptions
import nacl.signing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "ALGORITHMS",
    "ED25519",
    "HMAC_SHA256",
    "SIGNATURE_VERSION",
    "Keyring",
    "PrivateKey",
    "SigningKeyError",
    "TrustedKey",
    "b64url",
    "from_b64url",
    "signing_input",
]

SIGNATURE_VERSION = "eventfleet-sig-v1"
ED25519 = "ed25519"
HMAC_SHA256 = "hmac-sha256"
ALGORITHMS = (ED25519, HMAC_SHA256)
BASE64URL = re.compile(r"^[A-Za-z0-9_-]+$")


class SigningKeyError(ValueError):
    """A key or keyring that cannot be used: the message says which and why (never the secret)."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def from_b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def signing_input(
    *,
    keyid: str,
    topic: str,
    key: str,
    event_id: str,
    event_type: str,
    source: str,
    time: str,
    correlation_id: str,
    causation_id: str | None,
    value: bytes,
) -> bytes:
    """The exact bytes that are signed: these lines joined by `\\n`, the value by its SHA-256
    (see docs/wire-format.md)."""
    lines = (
        SIGNATURE_VERSION,
        keyid,
        topic,
        key,
        event_id,
        event_type,
        source,
        time,
        correlation_id,
        causation_id or "",
        hashlib.sha256(value).hexdigest(),
    )
    return "\n".join(lines).encode("utf-8")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise SigningKeyError(f"validity date {text!r} needs a UTC offset")
    return moment


def _time_text(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else None


@dataclass(frozen=True)
class PrivateKey:
    """A signer's own key: kept in its own file, never in the shared keyring, never logged (repr hides it)."""

    kid: str
    alg: str
    secret: bytes = field(repr=False)
    not_before: datetime | None = None
    # The Ed25519 key parsed once from `secret` (None for HMAC); set by __post_init__, not an argument. libsodium's
    # (PyNaCl): it signs in about 60 % of the time `cryptography` takes here (README, "Dependencies").
    _ed25519: nacl.signing.SigningKey | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.alg not in ALGORITHMS:
            raise SigningKeyError(f"key {self.kid}: unknown algorithm {self.alg!r}; use one of {', '.join(ALGORITHMS)}")
        if self.alg == ED25519 and len(self.secret) != 32:
            raise SigningKeyError(f"key {self.kid}: an Ed25519 private key is 32 bytes")
        if self.alg == HMAC_SHA256 and len(self.secret) < 32:
            raise SigningKeyError(f"key {self.kid}: an HMAC-SHA256 secret needs at least 32 bytes")
        object.__setattr__(self, "_ed25519", nacl.signing.SigningKey(self.secret) if self.alg == ED25519 else None)

    @classmethod
    def generate(cls, kid: str, alg: str = ED25519, *, not_before: datetime | None = None) -> PrivateKey:
        import os

        return cls(kid, alg, os.urandom(32), not_before)

    def sign(self, data: bytes) -> str:
        if self._ed25519 is not None:  # Ed25519; else HMAC
            return b64url(self._ed25519.sign(data).signature)
        return b64url(hmac.new(self.secret, data, hashlib.sha256).digest())

    def public(self, topics: Iterable[str], *, not_after: datetime | None = None, owner: str = "") -> TrustedKey:
        """The keyring entry that lets verifiers trust this key for `topics`."""
        # HMAC: verifiers need the secret itself, so such keys suit one trust domain.
        material = bytes(self._ed25519.verify_key) if self._ed25519 is not None else self.secret
        return TrustedKey(self.kid, self.alg, material, frozenset(topics), self.not_before, not_after, owner)

    def public_pem(self) -> str:
        if self._ed25519 is None:  # not Ed25519
            raise SigningKeyError(f"key {self.kid} is {self.alg}: it has no public key")
        return _pem(bytes(self._ed25519.verify_key))

    def to_json(self) -> dict:
        return {
            "kid": self.kid,
            "alg": self.alg,
            "secret": b64url(self.secret),
            "not_before": _time_text(self.not_before),
        }

    @classmethod
    def from_json(cls, data: Mapping) -> PrivateKey:
        try:
            return cls(data["kid"], data["alg"], from_b64url(data["secret"]), _parse_time(data.get("not_before")))
        except (KeyError, TypeError, ValueError) as error:
            raise SigningKeyError(f"not a private key file: {error}") from None

    @classmethod
    def load(cls, path: Path) -> PrivateKey:
        return cls.from_json(json.loads(Path(path).read_text()))

    def save(self, path: Path) -> None:
        """Written with mode 0600: only its owner reads a private key."""
        import os

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(self.to_json(), handle, indent=2)


@dataclass(frozen=True)
class TrustedKey:
    """A keyring entry: the algorithm is bound to the key id here, never read from a message."""

    kid: str
    alg: str
    material: bytes = field(repr=False)  # Ed25519: the raw public key; HMAC: the shared secret
    topics: frozenset[str] = frozenset()
    not_before: datetime | None = None
    not_after: datetime | None = None
    owner: str = ""
    # The Ed25519 public key parsed once from `material` (None for HMAC); set by __post_init__, not an argument.
    # libsodium's (PyNaCl): it verifies in about half the time `cryptography` takes here (README, "Dependencies").
    _ed25519: nacl.signing.VerifyKey | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.alg not in ALGORITHMS:
            raise SigningKeyError(f"key {self.kid}: unknown algorithm {self.alg!r}")
        verifier = _verify_key(self.kid, self.material) if self.alg == ED25519 else None
        object.__setattr__(self, "_ed25519", verifier)  # parsed once: verification is on the per-event path

    def may_sign(self, topic: str) -> bool:
        return topic in self.topics or "*" in self.topics

    def valid_at(self, moment: datetime) -> bool:
        return (self.not_before is None or moment >= self.not_before) and (
            self.not_after is None or moment <= self.not_after
        )

    def verify(self, data: bytes, signature: str) -> bool:
        # Exactly one text per signature: base64url, no padding, canonical trailing bits.
        if not BASE64URL.match(signature):
            return False
        try:
            raw = from_b64url(signature)
        except ValueError:
            return False
        if b64url(raw) != signature:
            return False
        if self._ed25519 is not None:  # Ed25519; else HMAC
            try:
                self._ed25519.verify(data, raw)  # libsodium releases the GIL: a batch verifies on several threads
                return True
            except (nacl.exceptions.BadSignatureError, ValueError):  # ValueError: not 64 bytes
                return False
        return hmac.compare_digest(raw, hmac.new(self.material, data, hashlib.sha256).digest())

    def to_json(self) -> dict:
        entry: dict = {"kid": self.kid, "alg": self.alg, "owner": self.owner, "topics": sorted(self.topics)}
        if self.alg == ED25519:
            entry["public_key"] = _pem(self.material)
        else:
            entry["secret"] = b64url(self.material)
        entry["not_before"] = _time_text(self.not_before)
        entry["not_after"] = _time_text(self.not_after)
        return entry

    @classmethod
    def from_json(cls, data: Mapping) -> TrustedKey:
        try:
            alg = data["alg"]
            if alg == ED25519:
                public = serialization.load_pem_public_key(data["public_key"].encode())
                if not isinstance(public, Ed25519PublicKey):
                    raise SigningKeyError(f"key {data['kid']}: public_key is not an Ed25519 key")
                material = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            else:
                material = from_b64url(data["secret"])
            return cls(
                data["kid"],
                alg,
                material,
                frozenset(data.get("topics", ())),
                _parse_time(data.get("not_before")),
                _parse_time(data.get("not_after")),
                data.get("owner", ""),
            )
        except SigningKeyError:
            raise
        except (KeyError, TypeError, ValueError) as error:
            raise SigningKeyError(f"keyring entry {data.get('kid', '?')!r} is malformed: {error}") from None


@dataclass(frozen=True)
class Keyring:
    """Every key a deployment trusts, by key id."""

    keys: Mapping[str, TrustedKey] = field(default_factory=dict)

    @classmethod
    def of(cls, keys: Iterable[TrustedKey]) -> Keyring:
        return cls({k.kid: k for k in keys})

    def get(self, kid: str) -> TrustedKey | None:
        return self.keys.get(kid)

    def with_key(self, key: TrustedKey) -> Keyring:
        return Keyring({**self.keys, key.kid: key})

    def to_json(self) -> dict:
        return {"version": 1, "keys": [self.keys[kid].to_json() for kid in sorted(self.keys)]}

    @classmethod
    def from_json(cls, data: Mapping) -> Keyring:
        if data.get("version") != 1:
            raise SigningKeyError(f"unsupported keyring version {data.get('version')!r}")
        return cls.of(TrustedKey.from_json(entry) for entry in data.get("keys", ()))

    @classmethod
    def load(cls, path: Path) -> Keyring:
        try:
            return cls.from_json(json.loads(Path(path).read_text()))
        except json.JSONDecodeError as error:
            raise SigningKeyError(f"keyring {path} is not JSON: {error}") from None

    def save(self, path: Path) -> None:
        """Written to a temporary file, then renamed: a worker reloading the ring never reads half of it."""
        import os

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(path.suffix + ".partial")
        # A ring holding HMAC secrets is as secret as they are: readable by its owner only.
        mode = 0o600 if any(k.alg == HMAC_SHA256 for k in self.keys.values()) else 0o644
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(self.to_json(), indent=2) + "\n")
        os.chmod(partial, mode)
        os.replace(partial, path)


def _pem(raw_public_key: bytes) -> str:
    """An Ed25519 public key as PEM (SubjectPublicKeyInfo), the form operators exchange: `cryptography` writes it."""
    public = Ed25519PublicKey.from_public_bytes(raw_public_key)
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _verify_key(kid: str, raw_public_key: bytes) -> nacl.signing.VerifyKey:
    try:
        return nacl.signing.VerifyKey(raw_public_key)
    except (nacl.exceptions.ValueError, nacl.exceptions.TypeError) as error:
        raise SigningKeyError(f"key {kid}: not an Ed25519 public key ({error})") from None
