"""Settings every worker shares: how to reach Kafka and how to log (env prefix FLEET_)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.connection import KafkaConnection, Secret, read_password

__all__ = [
    "HttpPort",
    "KafkaSettings",
    "KeySettings",
    "LogSettings",
    "WorkerSettings",
    "last_operator_connection",
    "operator_connection",
]

# The worker's /metrics and /health port; 0 picks a free one (the worker logs which). Each service sets its own default.
HttpPort = Annotated[
    int, Field(ge=0, le=65535, description="Port of /metrics, /health/live and /health/ready; 0 picks a free port.")
]


class KafkaSettings(BaseSettings):
    """How a worker reaches the broker; `FLEET_KAFKA_BOOTSTRAP_SERVERS=host:9092,...`."""

    # Empty variables count as unset: a manifest may set FLEET_KAFKA_SASL_MECHANISM= for a PLAINTEXT broker.
    model_config = SettingsConfigDict(env_prefix="FLEET_KAFKA_", extra="ignore", env_ignore_empty=True)

    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list of brokers.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL"] = Field(
        "PLAINTEXT",
        description="PLAINTEXT for the local dev broker; SASL_SSL: TLS, then SCRAM as this service (docs/security.md).",
    )
    ssl_cafile: Path | None = Field(
        None, description="PEM file of the CA that signed the brokers' certificates (the system's CAs when unset)."
    )
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism with SASL_SSL."
    )
    sasl_username: str | None = Field(
        None, description="SCRAM user; a worker's default is its service name, the CLI's `admin`."
    )
    sasl_password: SecretStr | None = Field(
        None, description="SCRAM password (prefer sasl_password_file or credentials_dir: never logged)."
    )
    sasl_password_file: Path | None = Field(
        None, description="File whose first line is the SCRAM password (a mounted Kubernetes Secret)."
    )
    credentials_dir: Path | None = Field(
        None,
        description="Folder of `<user>.password` files (the local secure broker's): each process reads its own user's.",
    )
    graceful_timeout_s: float = Field(
        15.0, description="How long a stopping worker waits for in-flight handlers.", gt=0
    )
    request_timeout_ms: int = Field(30_000, description="Kafka request timeout.", gt=0)
    metadata_max_age_ms: int = Field(
        10_000,
        gt=0,
        description="A worker's clients refresh the cluster's metadata at least this often (aiokafka's default: "
        "5 min). After a partition leader fails over, aiokafka 0.14's consumer keeps asking the old leader for a "
        "starting offset until the next refresh: without this, a group can stall for minutes (docs/delivery.md).",
    )
    max_poll_interval_ms: int = Field(
        300_000,
        gt=0,
        description="A consumer that has not asked for records for this long leaves its group and its partitions move "
        "to another replica (their uncommitted records are redelivered). Keep it above the handler time limit.",
    )
    static_membership: bool = Field(
        False,
        description="Give each consumer group_instance_id=<group>-<FLEET_REPLICA_ID> (KIP-345): a replica that "
        "restarts within session_timeout_ms gets its partitions back without a rebalance. Every process needs its own "
        "replica id: two live consumers with one instance id fence each other (docs/local-fleet.md).",
    )
    batch_max_records: int = Field(
        500,
        ge=1,
        le=10_000,
        description="Each subscriber takes up to this many records per poll, verifies them in a small thread pool, "
        "runs the handler per event, commits a stateful worker's store once per batch and the offsets once its "
        "outcomes are durable; 1 is one record at a time (docs/delivery.md).",
    )
    batch_linger_ms: int = Field(
        10,
        ge=0,
        le=1_000,
        description="Once a poll brings fewer records than a batch holds, how long it waits for more: a steady trickle "
        "is handled in batches too. Each hop of an event costs up to this much latency (docs/performance.md).",
    )
    verify_threads: int = Field(
        2,
        ge=0,
        le=32,
        description="Threads a worker verifies a batch's signatures on, beside its event loop (Ed25519 releases the "
        "GIL while it checks a signature); 0 verifies on the event loop itself. Batches under 16 records always verify "
        "there (docs/performance.md).",
    )
    fetch_max_wait_ms: int = Field(
        5_000,
        gt=0,
        description="How long the broker holds a consumer's fetch while no record arrives; one that arrives is sent at "
        "once, so this costs no latency, and an idle consumer asks once per this long (docs/performance.md).",
    )
    linger_ms: int = Field(
        5,
        ge=0,
        description="How long a producer waits to put more records in one request: a batch's outputs go out together.",
    )
    session_timeout_ms: int = Field(
        45_000,
        gt=0,
        description="With static membership only: how long the group waits for a silent member before moving its "
        "partitions, so how long a restarting replica keeps them (aiokafka's 10 s otherwise).",
    )

    def connection(self, default_username: str | None = None) -> KafkaConnection:
        """Where and as whom this process connects: `sasl_username`, else `default_username` (a worker's service)."""
        user = self.sasl_username or default_username
        secret = self.sasl_password.get_secret_value() if self.sasl_password else None
        password = (
            read_password(user, secret, self.sasl_password_file, self.credentials_dir)
            if self.security_protocol == "SASL_SSL"
            else None
        )
        return KafkaConnection(
            self.bootstrap_servers,
            self.security_protocol,
            user,
            Secret.wrap(password),
            self.sasl_mechanism,
            self.ssl_cafile,
        )


class LogSettings(BaseSettings):
    """How a worker logs: JSON lines by default, a readable console renderer when asked or on a terminal."""

    model_config = SettingsConfigDict(env_prefix="FLEET_LOG_", extra="ignore")

    level: str = Field("INFO", description="Minimum level of the worker's own and library log lines.")
    format: str = Field(
        "auto",
        description="`json`, `console`, or `auto` (console on a terminal, JSON otherwise).",
        pattern="^(auto|json|console)$",
    )
    payloads: bool = Field(
        False, description="Debugging only: add each handled event's payload to its line, personal fields redacted."
    )


class KeySettings(BaseSettings):
    """Where a worker finds the keyring and its signing keys, and how strict freshness is (env prefix FLEET_KEYS_)."""

    model_config = SettingsConfigDict(env_prefix="FLEET_KEYS_", extra="ignore")

    dir: Path = Field(Path(".fleet/keys"), description="Holds keyring.json and private/<signer>/<kid>.json.")
    window_s: float = Field(
        300.0, description="Largest accepted gap between a record's broker timestamp and its ce_time.", gt=0
    )
    reload_every_s: float = Field(2.0, description="How often workers look for keyring or key changes on disk.", gt=0)


class WorkerSettings(BaseSettings):
    """What every Kafka worker is configured with besides its own rules: how to reach Kafka and its keys.
    A service subclasses it with its env prefix, its consumer group and its store."""

    model_config = SettingsConfigDict(extra="ignore")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    keys: KeySettings = Field(default_factory=KeySettings)
    http_port: HttpPort = 0
    http_host: str = Field(
        "127.0.0.1", description="Address the /metrics and /health port listens on (0.0.0.0 in a container)."
    )
    liveness_bound_s: float = Field(
        120.0,
        gt=0,
        description="/health/live fails when a handler runs longer than this, or when records wait and none was "
        "handled for this long while the broker answers.",
    )
    readiness_lag_threshold: int = Field(
        1000,
        gt=0,
        description="/health/ready fails while the main subscribers are this many records behind or more.",
    )


def operator_connection(bootstrap: str | None = None) -> KafkaConnection:
    """The connection of an operator's command (`fleet topics`, `dlq`, `acl`, `status`, ...): the FLEET_KAFKA_ settings,
    `--bootstrap` replacing the address, as FLEET_KAFKA_SASL_USERNAME or else `admin` on a secure cluster."""
    settings = KafkaSettings(bootstrap_servers=bootstrap) if bootstrap else KafkaSettings()
    connection = settings.connection("admin")
    _operator_connections.append(connection)
    return connection


_operator_connections: list[KafkaConnection] = []


def last_operator_connection() -> KafkaConnection | None:
    """The connection the last operator command used: what `fleet` diagnoses when a client could not connect."""
    return _operator_connections[-1] if _operator_connections else None
