"""SCRAM users on a running broker: which exist, and adding the missing ones (Kafka's DescribeUserScramCredentials and
AlterUserScramCredentials requests, which aiokafka's admin client does not offer)."""

from __future__ import annotations

import hashlib
import secrets
from typing import TYPE_CHECKING, Mapping

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import for_code
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import CompactArray, CompactBytes, CompactString, Int8, Int16, Int32, Schema, TaggedFields

if TYPE_CHECKING:
    from contracts.connection import KafkaConnection

__all__ = ["ITERATIONS", "SCRAM_SHA_512", "ScramError", "add_missing_users", "salted_password", "scram_users"]

SCRAM_SHA_512 = 2  # the mechanism's number on the wire (SCRAM-SHA-256 is 1)
ITERATIONS = 8192  # Kafka accepts 4096 and more; the salted password is computed here, never the broker's job
_NO_TAGS: dict = {}


class ScramError(RuntimeError):
    """The broker refused to describe or store a SCRAM credential."""


def salted_password(password: str, salt: bytes, iterations: int = ITERATIONS) -> bytes:
    """SCRAM's SaltedPassword (RFC 5802: Hi(password, salt, i)), which is PBKDF2 with HMAC-SHA-512 here."""
    return hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)


async def scram_users(connection: KafkaConnection) -> set[str]:
    """The users that have a SCRAM-SHA-512 credential on the cluster."""
    response = await _send(connection, _DescribeUsers())
    if response.error_code:
        raise ScramError(
            f"the broker would not describe its SCRAM users: {_error(response.error_code, response.error_message)}"
        )
    return {
        user
        for user, code, _, infos, _ in response.results
        if not code and any(mechanism == SCRAM_SHA_512 for mechanism, _, _ in infos)
    }


async def add_missing_users(connection: KafkaConnection, passwords: Mapping[str, str]) -> list[str]:
    """Stores a SCRAM-SHA-512 credential for each user in `passwords` that has none yet; returns the users added.
    An existing user keeps its credential: a password is changed on purpose, never as a side effect."""
    missing = sorted(set(passwords) - await scram_users(connection))
    if missing:
        response = await _send(connection, _UpsertUsers({user: passwords[user] for user in missing}))
        refused = [f"{user}: {_error(code, message)}" for user, code, message, _ in response.results if code]
        if refused:
            raise ScramError("the broker refused SCRAM credentials for " + "; ".join(refused))
    return missing


async def _send(connection: KafkaConnection, request: Request):
    admin = AIOKafkaAdminClient(**connection.aiokafka_options(), client_id="fleet-scram")
    await admin.start()
    try:
        return await admin._send_request(request)
    finally:
        await admin.close()


def _error(code: int, message: str | None) -> str:
    return f"{for_code(code).__name__}{f' ({message})' if message else ''}"


# ---- the two requests, version 0 (flexible: compact types and tagged fields) ----------------------------------------


class _DescribeResponse(Response):
    API_KEY = 50
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        ("error_message", CompactString("utf-8")),
        (
            "results",
            CompactArray(
                ("user", CompactString("utf-8")),
                ("error_code", Int16),
                ("error_message", CompactString("utf-8")),
                ("credential_infos", CompactArray(("mechanism", Int8), ("iterations", Int32), ("tags", TaggedFields))),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _DescribeStruct(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 50
    API_VERSION = 0
    RESPONSE_TYPE = _DescribeResponse
    SCHEMA = Schema(
        ("users", CompactArray(("name", CompactString("utf-8")), ("tags", TaggedFields))), ("tags", TaggedFields)
    )


class _DescribeUsers(Request[_DescribeStruct]):
    API_KEY = 50

    def build(self, request_struct_class: type[_DescribeStruct]) -> _DescribeStruct:
        return request_struct_class(None, _NO_TAGS)  # no list: every user


class _AlterResponse(Response):
    API_KEY = 51
    API_VERSION = 0
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "results",
            CompactArray(
                ("user", CompactString("utf-8")),
                ("error_code", Int16),
                ("error_message", CompactString("utf-8")),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _AlterStruct(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 51
    API_VERSION = 0
    RESPONSE_TYPE = _AlterResponse
    SCHEMA = Schema(
        ("deletions", CompactArray(("name", CompactString("utf-8")), ("mechanism", Int8), ("tags", TaggedFields))),
        (
            "upsertions",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("mechanism", Int8),
                ("iterations", Int32),
                ("salt", CompactBytes),
                ("salted_password", CompactBytes),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _UpsertUsers(Request[_AlterStruct]):
    API_KEY = 51

    def __init__(self, passwords: Mapping[str, str]) -> None:
        self.passwords = dict(passwords)

    def build(self, request_struct_class: type[_AlterStruct]) -> _AlterStruct:
        upsertions = []
        for user, password in sorted(self.passwords.items()):
            salt = secrets.token_bytes(32)
            upsertions.append((user, SCRAM_SHA_512, ITERATIONS, salt, salted_password(password, salt), _NO_TAGS))
        return request_struct_class([], upsertions, _NO_TAGS)
