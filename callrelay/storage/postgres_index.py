"""The history index in PostgreSQL (`DATABASE_URL`), shared by every relay process and host.

psycopg 3 with a small pool (`psycopg_pool`). Under `callrelay serve` the standard library is
patched by gevent before psycopg is imported, and psycopg then waits on its sockets through the
patched `select` (it checks for gevent's patching as it is imported): a slow query suspends
only the task that made it. The pool connects in the background, so a database that is down
does not stop the relay from starting; every method raises while it is unreachable.

The schema is versioned (`callrelay_schema`): each migration runs once, in order, in one
transaction under an advisory lock, so relays that start together against an empty database
take turns instead of racing.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from psycopg import Connection
from psycopg.errors import InsufficientPrivilege, UndefinedFile, UndefinedObject
from psycopg_pool import ConnectionPool

from callrelay.logs import log_event
from callrelay.storage.index import MAX_PAGE, CallQuery, CallRow, sql_conditions

logger = logging.getLogger("callrelay.history")

TABLE = "callrelay_calls"
FORGOTTEN = "callrelay_deleted_calls"
MIGRATION_LOCK = 0x63616C6C72656C61  # "callrela": one advisory lock key for every relay
MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE {TABLE} (
        call_sid text PRIMARY KEY,
        started_at double precision NOT NULL,
        ended_at double precision,
        direction text,
        from_number text,
        to_number text,
        status text,
        seconds double precision,
        transcript text NOT NULL DEFAULT ''
    );
    CREATE INDEX {TABLE}_by_time ON {TABLE} (started_at DESC);
    """,
    f"""
    CREATE TABLE {FORGOTTEN} (
        call_sid text PRIMARY KEY,
        deleted_at double precision NOT NULL
    );
    """,
)
"""Each migration, in order; a new one is appended, never edited."""
TRIGRAM_INDEXES = (
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_words ON {TABLE} USING gin (transcript gin_trgm_ops)",
)
"""Search by a part of what was said, fast on many calls, where the server allows `pg_trgm`
(a trusted extension: a database owner may create it); without it search scans the table."""
COLUMNS = tuple(field.name for field in dataclasses.fields(CallRow))
POOL_SIZE = 4
WAIT_SECONDS = 5.0
"""The longest a request waits for a connection before it is told the index is away."""


class SchemaTooNew(Exception):
    """The database was migrated by a newer relay than this one."""


class PostgresHistoryIndex:
    def __init__(self, url: str) -> None:
        self._url = url
        self._pool: ConnectionPool[Connection[Any]] | None = None

    @property
    def where(self) -> str:
        """The database, without its password, for logs."""
        parts = urlsplit(self._url)
        return f"{parts.hostname}:{parts.port or 5432}{parts.path}"

    def open(self) -> None:
        self._pool = ConnectionPool(
            self._url,
            min_size=1,
            max_size=POOL_SIZE,
            timeout=WAIT_SECONDS,
            kwargs={"autocommit": True, "connect_timeout": int(WAIT_SECONDS)},
            name="callrelay-history",
            open=False,
        )
        self._pool.open(wait=False)

    def migrate(self) -> None:
        with self._connection() as db, db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            db.execute("CREATE TABLE IF NOT EXISTS callrelay_schema (version integer NOT NULL)")
            row = db.execute("SELECT max(version) FROM callrelay_schema").fetchone()
            version = int(row[0]) if row and row[0] is not None else 0
            if version > len(MIGRATIONS):
                raise SchemaTooNew(
                    f"the history's schema is version {version}; this relay knows up to "
                    f"{len(MIGRATIONS)}: upgrade it"
                )
            for number in range(version, len(MIGRATIONS)):
                db.execute(MIGRATIONS[number])
                db.execute("INSERT INTO callrelay_schema VALUES (%s)", (number + 1,))
                log_event(logger, "history_schema_migrated", version=number + 1, to=self.where)
            self._add_trigram_index(db)

    @staticmethod
    def _add_trigram_index(db: Connection[Any]) -> None:
        try:
            with db.transaction():  # a savepoint: a refusal leaves the migration standing
                for statement in TRIGRAM_INDEXES:
                    db.execute(statement)
        except (InsufficientPrivilege, UndefinedFile, UndefinedObject) as error:
            log_event(
                logger,
                "history_search_unindexed",
                logging.WARNING,
                error=type(error).__name__,
                detail="pg_trgm is not available: search by words scans the table",
            )

    def record(self, row: CallRow) -> None:
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])
        with self._connection() as db:
            db.execute(
                f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) "
                f"VALUES ({', '.join(['%s'] * len(COLUMNS))}) "
                f"ON CONFLICT (call_sid) DO UPDATE SET {updates}",
                dataclasses.astuple(row),
            )

    def known(self, call_sids: Sequence[str]) -> set[str]:
        with self._connection() as db:
            rows = db.execute(
                f"SELECT call_sid FROM {TABLE} WHERE call_sid = ANY(%s)", (list(call_sids),)
            ).fetchall()
        return {row[0] for row in rows}

    def query(self, query: CallQuery) -> list[CallRow]:
        where, values = sql_conditions(query, "%s", like="ILIKE")
        sql = f"SELECT {', '.join(COLUMNS)} FROM {TABLE}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY started_at DESC LIMIT %s"
        values.append(max(1, min(query.limit, MAX_PAGE)))
        with self._connection() as db:
            rows = db.execute(sql, values).fetchall()
        return [CallRow(*row) for row in rows]

    def forget(self, call_sid: str) -> None:
        with self._connection() as db, db.transaction():
            db.execute(f"DELETE FROM {TABLE} WHERE call_sid = %s", (call_sid,))
            db.execute(
                f"INSERT INTO {FORGOTTEN} VALUES (%s, extract(epoch from now())) "
                "ON CONFLICT (call_sid) DO NOTHING",
                (call_sid,),
            )

    def forgotten(self, call_sids: Sequence[str]) -> set[str]:
        with self._connection() as db:
            rows = db.execute(
                f"SELECT call_sid FROM {FORGOTTEN} WHERE call_sid = ANY(%s)", (list(call_sids),)
            ).fetchall()
        return {row[0] for row in rows}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _connection(self) -> Any:
        if self._pool is None:
            raise RuntimeError("the history index is not open")
        return self._pool.connection()
