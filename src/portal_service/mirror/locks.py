"""The per-object lock every mirror write holds: one key per (account, object kind, id),
taken whether or not the row exists yet (ARCHITECTURE.md, "Webhook processing")."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import BigInteger, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.functions import Function


def lock_key(account: str, kind: str, object_id: str) -> int:
    """A stable signed 64-bit key (PostgreSQL's bigint) for an object, the same in every process."""
    name = "\x1f".join((account, kind, object_id)).encode()
    digest = hashlib.blake2b(name, digest_size=8, person=b"portal-lock").digest()
    return int.from_bytes(digest, "big", signed=True)


def lock_call() -> Function[Any]:
    """`pg_advisory_xact_lock(:lock_key)`: PostgreSQL's transaction-level advisory lock on
    a `lock_key`, for statements that take the lock on the way (the event insert does)."""
    return func.pg_advisory_xact_lock(bindparam("lock_key", type_=BigInteger))


_LOCK = select(lock_call())


async def lock_object(session: AsyncSession, *, account: str, kind: str, object_id: str) -> None:
    """Block until this transaction holds the object's lock; released at commit or rollback.

    PostgreSQL: a transaction-level advisory lock, which covers a row that does not exist
    yet (a row lock could not). SQLite: nothing to do, every write transaction already
    holds the database's write lock from its first statement (BEGIN IMMEDIATE).
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    await session.execute(_LOCK, {"lock_key": lock_key(account, kind, object_id)})
