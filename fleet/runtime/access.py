"""Kafka's refusals made plain: a wrong password or a missing ACL stops the worker with one clear line.

Never a retry loop: retrying cannot fix a credential or a permission."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import Callable

import structlog
from aiokafka.conn import create_conn
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from contracts.connection import KafkaConnection

__all__ = ["EXIT_ACCESS_DENIED", "Denials", "KafkaAccessDenied", "authenticate", "authenticate_or_report", "denial_of"]

# sysexits' EX_CONFIG: the process cannot work as configured. `fleet up` does not restart a replica that exits with it:
# every restart would be refused the same way until an operator changes a password or an ACL.
EXIT_ACCESS_DENIED = 78
log = structlog.get_logger("eventfleet.access")

# What each refusal means, and the resource kind aiokafka names in its message.
_REFUSALS = {
    TopicAuthorizationFailedError: ("topic", "read or write this topic"),
    GroupAuthorizationFailedError: ("group", "join this consumer group"),
    ClusterAuthorizationFailedError: ("cluster", "do this cluster-wide operation (e.g. IdempotentWrite)"),
    TransactionalIdAuthorizationFailed: ("transactional id", "use this transactional id"),
}


@dataclass  # not frozen: Python itself sets attributes on exceptions (__notes__, __traceback__)
class KafkaAccessDenied(Exception):
    """The broker refused this process: `kind` is authentication, topic, group, cluster or transactional id."""

    kind: str
    who: str  # the principal, e.g. User:payments
    resource: str  # the topic or group aiokafka named ('' when it named none)
    doing: str  # what the process tried
    hint: str

    def __str__(self) -> str:
        if self.resource:
            return f"Kafka denied {self.who} access to {self.kind} {self.resource!r} ({self.doing}): {self.hint}"
        return f"Kafka refused {self.who or 'the client'} ({self.doing}): {self.hint}"

    def fields(self) -> dict[str, str]:
        return {
            "kind": self.kind,
            "principal": self.who,
            "resource": self.resource,
            "doing": self.doing,
            "hint": self.hint,
        }


def denial_of(error: BaseException, connection: KafkaConnection, doing: str) -> KafkaAccessDenied | None:
    """The refusal inside `error` (aiokafka's authorization and authentication errors), or None for any other error."""
    if isinstance(error, KafkaAccessDenied):
        return error
    who = connection.principal or "User:ANONYMOUS"
    for error_class, (kind, means) in _REFUSALS.items():
        if isinstance(error, error_class):
            resource = str(error).split(":", 1)[1].strip() if ":" in str(error) else ""
            return KafkaAccessDenied(
                kind,
                who,
                resource,
                doing,
                f"no ACL allows {who} to {means}. `fleet acl plan` shows what the wiring needs and "
                "`fleet acl apply` grants it; a service that should not touch it is miswired.",
            )
    if isinstance(error, SaslAuthenticationFailed):
        return _bad_password(connection, str(error))
    return None


def _bad_password(connection: KafkaConnection, detail: str) -> KafkaAccessDenied:
    return KafkaAccessDenied(
        "authentication",
        connection.principal or "",
        "",
        f"SCRAM login at {connection.bootstrap_servers}",
        f"wrong password or unknown user {connection.username!r} ({detail.strip() or 'SASL authentication failed'}). "
        "Check FLEET_KAFKA_SASL_PASSWORD_FILE, FLEET_KAFKA_CREDENTIALS_DIR or FLEET_KAFKA_SASL_PASSWORD.",
    )


async def authenticate(connection: KafkaConnection, timeout_s: float = 10.0) -> None:
    """Logs in once before any client starts: aiokafka reports a refused password as `Unable to bootstrap`, the same as
    a broker that is down. Raises KafkaAccessDenied for a refused login or an untrusted certificate; an unreachable
    broker is left to the clients, which wait for it."""
    if not connection.secure:
        return
    options = connection.aiokafka_options()
    options.pop("bootstrap_servers")
    for address in connection.bootstrap_servers.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            conn = await asyncio.wait_for(create_conn(host, int(port), client_id="fleet-login", **options), timeout_s)
        except SaslAuthenticationFailed as error:
            raise _bad_password(connection, str(error)) from None
        except ssl.SSLCertVerificationError as error:
            raise KafkaAccessDenied(
                "tls",
                connection.principal or "",
                "",
                f"TLS handshake with {address}",
                f"the broker's certificate is not trusted ({error.verify_message}); FLEET_KAFKA_SSL_CAFILE "
                f"is {connection.ssl_cafile or 'unset (the system CAs)'}",
            ) from None
        except (TimeoutError, OSError):
            continue  # this broker is down or slow: try the next one
        conn.close()
        return


class Denials:
    """One worker's first refusal: logged once, then `on_first` (the worker stops), and its runner exits with 78."""

    def __init__(self, on_first: Callable[[], None] | None = None) -> None:
        self.first: KafkaAccessDenied | None = None
        self.on_first = on_first

    def report(self, denial: KafkaAccessDenied) -> None:
        if self.first is None:
            self.first = denial
            log.error("kafka_access_denied", **denial.fields())
            if self.on_first is not None:
                self.on_first()


async def authenticate_or_report(connection: KafkaConnection, denials: Denials) -> None:
    """`authenticate`, and a refusal reported (logged once, the worker stopped) before it is raised."""
    try:
        await authenticate(connection)
    except KafkaAccessDenied as denial:
        denials.report(denial)
        raise
