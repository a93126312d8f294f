"""How a Kafka client reaches the broker: bootstrap servers, TLS and SASL/SCRAM credentials from settings.

The credentials are never printed."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

__all__ = ["PROTOCOLS", "ConnectionSettingsError", "KafkaConnection", "Secret", "client_options", "read_password"]

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")


class ConnectionSettingsError(ValueError):
    """The connection settings are incomplete or contradictory (say which setting to fix)."""


class Secret:
    """A password that prints as stars whatever prints it: repr, str, f-strings, and JSON loggers (orjson writes a
    dataclass's fields, even those hidden from its repr, but turns an unknown object into its str)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    @classmethod
    def wrap(cls, value: str | Secret | None) -> Secret | None:
        """A plain string as a Secret; a Secret or None as it is."""
        return cls(value) if isinstance(value, str) else value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class KafkaConnection:
    """Everything a client needs besides its own options. `repr` and `str` never show the password.

    PLAINTEXT (the local dev broker), SSL (TLS only), or SASL_SSL: TLS, then SCRAM with `username` and `password`.
    `ssl_cafile` is the CA that signed the brokers' certificates (the system's CAs when None)."""

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    username: str | None = None
    password: Secret | None = field(default=None, repr=False)
    sasl_mechanism: str = "SCRAM-SHA-512"
    ssl_cafile: Path | None = None

    def __post_init__(self) -> None:
        if isinstance(self.password, str):  # an untyped caller may pass a plain string: it is wrapped at once
            object.__setattr__(self, "password", Secret(self.password))
        if self.security_protocol not in PROTOCOLS:
            raise ConnectionSettingsError(
                f"security protocol {self.security_protocol!r} is not one of {', '.join(PROTOCOLS)}"
            )
        if self.sasl_mechanism not in MECHANISMS:
            raise ConnectionSettingsError(
                f"SASL mechanism {self.sasl_mechanism!r} is not one of {', '.join(MECHANISMS)}"
            )
        if self.security_protocol == "SASL_SSL" and not (self.username and self.password):
            missing = "a username" if not self.username else f"a password for {self.username!r}"
            raise ConnectionSettingsError(
                f"SASL_SSL needs {missing} (FLEET_KAFKA_SASL_USERNAME, FLEET_KAFKA_SASL_PASSWORD, "
                "FLEET_KAFKA_SASL_PASSWORD_FILE or FLEET_KAFKA_CREDENTIALS_DIR)"
            )
        if self.ssl_cafile is not None and not Path(self.ssl_cafile).is_file():
            raise ConnectionSettingsError(f"the CA file {self.ssl_cafile} does not exist (FLEET_KAFKA_SSL_CAFILE)")

    @property
    def secure(self) -> bool:
        return self.security_protocol != "PLAINTEXT"

    @property
    def principal(self) -> str | None:
        """`User:<name>`, as the broker's ACLs name this client; None without SASL."""
        return f"User:{self.username}" if self.security_protocol == "SASL_SSL" else None

    def __str__(self) -> str:
        return self.describe()

    def describe(self) -> str:
        """For logs and error messages: where and as whom, never the password."""
        if not self.secure:
            return self.bootstrap_servers
        who = f" as {self.username}" if self.security_protocol == "SASL_SSL" else ""
        return f"{self.bootstrap_servers} ({self.security_protocol}{who})"

    def aiokafka_options(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer, AIOKafkaConsumer, AIOKafkaClient and AIOKafkaAdminClient."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.secure:
            options["ssl_context"] = self.ssl_context()
        if self.security_protocol == "SASL_SSL":
            username, password = self.sasl_credentials()
            options |= {
                "sasl_mechanism": self.sasl_mechanism,
                "sasl_plain_username": username,
                "sasl_plain_password": password,
            }
        return options

    def sasl_credentials(self) -> tuple[str, str]:
        """The SCRAM username and the revealed password; on SASL_SSL, `__post_init__` made sure both are set."""
        if not (self.username and self.password):
            raise ConnectionSettingsError(f"{self.describe()} has no SASL username and password")
        return self.username, self.password.reveal()

    def ssl_context(self) -> ssl.SSLContext:
        # Host names are checked: the broker's certificate must name the address we dial.
        return ssl.create_default_context(cafile=str(self.ssl_cafile) if self.ssl_cafile else None)

    def as_user(self, username: str, password: str | Secret) -> KafkaConnection:
        return KafkaConnection(
            self.bootstrap_servers,
            self.security_protocol,
            username,
            Secret.wrap(password),
            self.sasl_mechanism,
            self.ssl_cafile,
        )

    @classmethod
    def from_env(
        cls, *, username: str | None = None, environ: Mapping[str, str] | None = None, prefix: str = "FLEET_KAFKA_"
    ) -> KafkaConnection:
        """The same variables the fleet's workers read: `FLEET_KAFKA_BOOTSTRAP_SERVERS`, `..._SECURITY_PROTOCOL`,
        `..._SSL_CAFILE`, `..._SASL_USERNAME` (else `username`), and the password from `..._SASL_PASSWORD`,
        `..._SASL_PASSWORD_FILE`, or `<..._CREDENTIALS_DIR>/<username>.password`, in that order."""
        env = os.environ if environ is None else environ
        get = lambda name, default=None: env.get(prefix + name) or default  # noqa: E731
        user = get("SASL_USERNAME", username)
        cafile = get("SSL_CAFILE")
        return cls(
            bootstrap_servers=get("BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            security_protocol=get("SECURITY_PROTOCOL", "PLAINTEXT").upper(),
            username=user,
            password=Secret.wrap(
                read_password(user, get("SASL_PASSWORD"), get("SASL_PASSWORD_FILE"), get("CREDENTIALS_DIR"))
            ),
            sasl_mechanism=get("SASL_MECHANISM", "SCRAM-SHA-512").upper(),
            ssl_cafile=Path(cafile) if cafile else None,
        )


def read_password(
    username: str | None, password: str | None, password_file: str | Path | None, credentials_dir: str | Path | None
) -> str | None:
    """The password given directly, else the first line of its file, else `<credentials_dir>/<username>.password`."""
    if password:
        return password
    path = (
        Path(password_file)
        if password_file
        else (Path(credentials_dir) / f"{username}.password" if credentials_dir and username else None)
    )
    if path is None:
        return None
    try:
        return path.read_text().strip() or None
    except OSError as error:
        raise ConnectionSettingsError(
            f"cannot read the Kafka password of {username!r} from {path}: {error.strerror}"
        ) from None


def client_options(target: str | KafkaConnection) -> dict[str, Any]:
    """aiokafka's connection keywords for a bare `host:port,...` string (plaintext) or a `KafkaConnection`."""
    return target.aiokafka_options() if isinstance(target, KafkaConnection) else {"bootstrap_servers": target}
