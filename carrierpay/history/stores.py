"""History stores: a separate PostgreSQL database (default) or MongoDB, behind one interface.

A store must make `write` durable before it returns and must accept the same document twice
without storing it twice: the shipper deletes outbox rows only after `write` returned, and
re-sends a batch whose deletion did not commit.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Protocol
from urllib.parse import urlsplit

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from carrierpay.history.documents import CORRELATIONS, SOURCES

HISTORY_DATABASE = "carrierpay_history"
# Days kept per document source; CARRIERPAY_HISTORY_RETENTION_EVENT_DAYS / _CARRIER_LOG_DAYS override.
DEFAULT_RETENTION_DAYS = {"event": 400, "carrier_log": 90}
_PARTITION_LOCK = 0x43504850  # "CPHP": one creator of schema and partitions at a time


class StoreUnavailable(RuntimeError):
    """The history store could not confirm a write or answer a read; nothing was lost."""


class HistoryStore(Protocol):
    url: str

    def ensure_ready(self) -> None:
        """Create the database objects the store needs (idempotent, safe to run concurrently)."""

    def write(self, documents: Sequence[dict]) -> int:
        """Store documents durably; a document already stored is skipped. Returns how many were new."""

    def find(self, field: str, value: int, aggregate_type: str | None = None) -> list[dict]:
        """Documents whose `field` (a correlation, or "aggregate" with aggregate_type) equals value."""

    def apply_retention(self, days: dict[str, int], now: datetime | None = None) -> list[str]:
        """Remove documents older than `days[source]`; returns what was removed (partitions or counts)."""

    def close(self) -> None: ...


def retention_days(environ: dict | None = None) -> dict[str, int]:
    env = os.environ if environ is None else environ
    return {
        source: int(env.get(f"CARRIERPAY_HISTORY_RETENTION_{source.upper()}_DAYS", default))
        for source, default in DEFAULT_RETENTION_DAYS.items()
    }


def history_url(database_url: str, configured: str | None = None) -> str:
    """CARRIERPAY_HISTORY_URL if set, else the carrierpay_history database next to the main database."""
    configured = configured or os.environ.get("CARRIERPAY_HISTORY_URL")
    if configured:
        return configured
    from sqlalchemy.engine import make_url

    return make_url(database_url).set(database=HISTORY_DATABASE).render_as_string(hide_password=False)


def open_store(url: str) -> HistoryStore:
    scheme = urlsplit(url).scheme
    if scheme in ("mongodb", "mongodb+srv"):
        return MongoStore(url)
    if scheme in ("postgresql", "postgres"):
        return PostgresStore(url)
    raise ValueError(f"unsupported history store URL scheme {scheme!r} (use postgresql:// or mongodb://)")


def _jsonable(value):
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _day(at: datetime) -> date:
    return at.astimezone(UTC).date()


# -- PostgreSQL ------------------------------------------------------------------------------

_PG_SCHEMA = """
create schema if not exists history;
-- List-partitioned by source so each source has its own day partitions and its own retention.
create table if not exists history.document (
    source          text not null,
    id              bigint not null,
    aggregate_type  text not null,
    aggregate_id    bigint not null,
    kind            text not null,
    occurred_at     timestamptz not null,
    recorded_at     timestamptz not null,
    procedure_id    bigint,
    payment_id      bigint,
    subscription_id bigint,
    subscriber_id   bigint,
    doc             jsonb not null,
    shipped_at      timestamptz not null default now(),
    -- a partitioned table's key must contain the partition keys; recorded_at never changes
    -- for an outbox row, so (source, id) alone decides a duplicate
    primary key (source, id, recorded_at)
) partition by list (source);
create table if not exists history.event partition of history.document
    for values in ('event') partition by range (recorded_at);
create table if not exists history.carrier_log partition of history.document
    for values in ('carrier_log') partition by range (recorded_at);
create index if not exists document_aggregate on history.document (aggregate_type, aggregate_id, occurred_at);
create index if not exists document_recorded_at on history.document (recorded_at);
create index if not exists document_payment on history.document (payment_id, recorded_at) where payment_id is not null;
create index if not exists document_procedure on history.document (procedure_id, recorded_at)
    where procedure_id is not null;
create index if not exists document_subscription on history.document (subscription_id, recorded_at)
    where subscription_id is not null;
create index if not exists document_subscriber on history.document (subscriber_id, recorded_at)
    where subscriber_id is not null;
"""

_PG_INSERT = """
insert into history.document (source, id, aggregate_type, aggregate_id, kind, occurred_at, recorded_at,
                              procedure_id, payment_id, subscription_id, subscriber_id, doc)
select d->>'source', (d->>'id')::bigint, d->>'aggregate_type', (d->>'aggregate_id')::bigint, d->>'kind',
       (d->>'occurred_at')::timestamptz, (d->>'recorded_at')::timestamptz,
       (d->>'procedure_id')::bigint, (d->>'payment_id')::bigint, (d->>'subscription_id')::bigint,
       (d->>'subscriber_id')::bigint, d
  from jsonb_array_elements(%s::jsonb) d
on conflict do nothing
"""

_PARTITION_NAME = re.compile(r"^(event|carrier_log)_(\d{8})$")


class PostgresStore:
    """Documents as jsonb in history.document, list-partitioned by source, then by day."""

    def __init__(self, url: str, *, connect_timeout: int = 5, statement_timeout_ms: int = 30000):
        self.url = url
        self._timeouts = {"connect_timeout": connect_timeout,
                          "options": f"-c statement_timeout={statement_timeout_ms}"}
        self._conn: psycopg.Connection | None = None
        self._partitions: set[str] = set()

    # -- connections ------------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(self.url, autocommit=True, row_factory=dict_row, **self._timeouts)
            except psycopg.OperationalError as exc:
                if re.search(r'database ".*" does not exist', str(exc)):
                    self._create_database()
                    self._conn = psycopg.connect(self.url, autocommit=True, row_factory=dict_row, **self._timeouts)
                else:
                    raise
        return self._conn

    def _create_database(self) -> None:
        parts = urlsplit(self.url)
        dbname = parts.path.lstrip("/")
        admin_url = parts._replace(path="/postgres").geturl()
        with psycopg.connect(admin_url, autocommit=True, **self._timeouts) as admin:
            try:
                admin.execute(sql.SQL("create database {} template template0 encoding 'UTF8'").format(
                    sql.Identifier(dbname)))
            except psycopg.errors.DuplicateDatabase:
                pass  # another shipper created it first

    def _run(self, action):
        """Run action(conn); any connection-level failure becomes StoreUnavailable."""
        try:
            return action(self._connect())
        except (psycopg.OperationalError, psycopg.errors.AdminShutdown, psycopg.errors.QueryCanceled,
                psycopg.errors.LockNotAvailable, psycopg.InterfaceError) as exc:
            self.close()
            raise StoreUnavailable(f"history store {self._safe_url()}: {str(exc).strip()}") from exc

    def _safe_url(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port}{parts.path}"

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    # -- interface --------------------------------------------------------------------------
    def ensure_ready(self) -> None:
        def create(conn):
            with conn.transaction():
                conn.execute("select pg_advisory_xact_lock(%s)", [_PARTITION_LOCK])
                conn.execute(_PG_SCHEMA.encode())

        self._run(create)

    def _ensure_partitions(self, conn, wanted: set[tuple[str, date]]) -> None:
        missing = {(s, d) for s, d in wanted if f"{s}_{d:%Y%m%d}" not in self._partitions}
        if not missing:
            return
        # Its own short transaction: creating a partition locks the parent, the insert must not wait on it.
        with conn.transaction():
            conn.execute("select pg_advisory_xact_lock(%s)", [_PARTITION_LOCK])
            for source, day in sorted(missing):
                name = f"{source}_{day:%Y%m%d}"
                conn.execute(sql.SQL(
                    "create table if not exists history.{} partition of history.{} for values from ({}) to ({})"
                ).format(sql.Identifier(name), sql.Identifier(source),
                         sql.Literal(f"{day.isoformat()} 00:00:00+00"),
                         sql.Literal(f"{(day + timedelta(days=1)).isoformat()} 00:00:00+00")))
                self._partitions.add(name)

    def write(self, documents: Sequence[dict]) -> int:
        if not documents:
            return 0
        payload = json.dumps(list(documents), default=_jsonable)

        def insert(conn):
            self._ensure_partitions(conn, {(d["source"], _day(d["recorded_at"])) for d in documents})
            with conn.transaction():
                return conn.execute(_PG_INSERT, [payload]).rowcount

        try:
            return self._run(insert)
        except (psycopg.errors.CheckViolation, psycopg.errors.UndefinedTable):
            # No partition for a day we believed existed: another process's retention dropped it
            # since we cached it ("no partition of relation … found for row"). Rebuild and retry once.
            self._partitions.clear()
            self.ensure_ready()
            return self._run(insert)

    def find(self, field: str, value: int, aggregate_type: str | None = None) -> list[dict]:
        if field == "aggregate":
            where = sql.SQL("aggregate_type = %s and aggregate_id = %s")
            params: list = [aggregate_type, value]
        elif field in CORRELATIONS:
            where = sql.SQL("{} = %s").format(sql.Identifier(field))
            params = [value]
        else:
            raise ValueError(f"cannot look documents up by {field!r}")
        query = sql.SQL(
            "select doc, occurred_at, recorded_at from history.document where {} order by recorded_at, source, id"
        ).format(where)

        def select(conn):
            return conn.execute(query, params).fetchall()

        rows = self._run(select)
        return [row["doc"] | {"occurred_at": row["occurred_at"], "recorded_at": row["recorded_at"]} for row in rows]

    def partitions(self) -> list[str]:
        def select(conn):
            return conn.execute(
                "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid "
                "join pg_class p on p.oid = i.inhparent join pg_namespace n on n.oid = p.relnamespace "
                "where n.nspname = 'history' and p.relname = any(%s) order by 1",
                [list(SOURCES)],
            ).fetchall()

        return [row["relname"] for row in self._run(select)]

    def apply_retention(self, days: dict[str, int], now: datetime | None = None) -> list[str]:
        """Drop whole day partitions that ended before now - days[source]; newer days stay whole."""
        now = now or datetime.now(UTC)
        dropped = []
        for name in self.partitions():
            match = _PARTITION_NAME.match(name)
            if not match or match.group(1) not in days:
                continue
            day_end = datetime.strptime(match.group(2), "%Y%m%d").replace(tzinfo=UTC) + timedelta(days=1)
            if day_end <= now - timedelta(days=days[match.group(1)]):
                def drop(conn, name=name):
                    with conn.transaction():
                        conn.execute("select pg_advisory_xact_lock(%s)", [_PARTITION_LOCK])
                        conn.execute(sql.SQL("drop table if exists history.{}").format(sql.Identifier(name)))

                self._run(drop)
                self._partitions.discard(name)
                dropped.append(name)
        return dropped


# -- MongoDB ---------------------------------------------------------------------------------

MONGO_COLLECTIONS = {"event": "events", "carrier_log": "carrier_log"}
DUPLICATE_KEY = 11000


def to_mongo(doc: dict) -> dict:
    """The stored shape: the outbox id is `_id` (unique per collection, so a re-send is a duplicate)."""
    out = {key: value for key, value in doc.items() if key not in ("id", "source")}
    out["_id"] = doc["id"]
    return out


def from_mongo(source: str, stored: dict) -> dict:
    doc = {key: value for key, value in stored.items() if key != "_id"}
    doc["id"] = stored["_id"]
    doc["source"] = source
    for field in ("occurred_at", "recorded_at"):
        if isinstance(doc.get(field), datetime) and doc[field].tzinfo is None:
            doc[field] = doc[field].replace(tzinfo=UTC)
    return doc


def insert_ignoring_duplicates(collection, documents: list[dict]) -> int:
    """insert_many(ordered=False); duplicates (11000) are expected on a re-send, anything else raises."""
    from pymongo.errors import BulkWriteError

    if not documents:
        return 0
    try:
        return len(collection.insert_many(documents, ordered=False).inserted_ids)
    except BulkWriteError as exc:
        details = exc.details or {}
        others = [err for err in details.get("writeErrors", []) if err.get("code") != DUPLICATE_KEY]
        if others or details.get("writeConcernErrors"):
            raise
        return int(details.get("nInserted", 0))


class MongoStore:
    """One collection per source (events, carrier_log), `_id` = outbox id, TTL on recorded_at."""

    def __init__(self, url: str, *, timeout_ms: int = 5000, client=None):
        self.url = url
        self._timeout_ms = timeout_ms
        self._client = client
        self._db = None

    def _database(self):
        if self._db is None:
            try:
                import pymongo
            except ImportError as exc:  # pragma: no cover - depends on the installed extras
                raise RuntimeError("the MongoDB history store needs pymongo: pip install 'carrierpay[mongo]'") from exc
            if self._client is None:
                self._client = pymongo.MongoClient(
                    self.url, tz_aware=True, serverSelectionTimeoutMS=self._timeout_ms,
                    socketTimeoutMS=self._timeout_ms * 6, connectTimeoutMS=self._timeout_ms,
                    w="majority", journal=True,
                )
            self._db = self._client.get_default_database(default=HISTORY_DATABASE)
        return self._db

    def _run(self, action):
        from pymongo.errors import ConnectionFailure, ServerSelectionTimeoutError

        try:
            return action(self._database())
        except (ConnectionFailure, ServerSelectionTimeoutError) as exc:
            raise StoreUnavailable(f"history store (MongoDB): {exc}") from exc

    def collection(self, source: str):
        return self._database()[MONGO_COLLECTIONS[source]]

    def ensure_ready(self, days: dict[str, int] | None = None) -> None:
        from pymongo import ASCENDING

        days = days or retention_days()

        def create(db):
            for source, name in MONGO_COLLECTIONS.items():
                coll = db[name]
                coll.create_index([("aggregate_type", ASCENDING), ("aggregate_id", ASCENDING),
                                   ("occurred_at", ASCENDING)], name="aggregate")
                for field in CORRELATIONS:
                    coll.create_index([(field, ASCENDING), ("recorded_at", ASCENDING)], name=field, sparse=True)
                self._ensure_ttl(db, name, days[source])

        self._run(create)

    @staticmethod
    def _ensure_ttl(db, name: str, days: int) -> None:
        seconds = int(days) * 86400
        existing = db[name].index_information().get("retention")
        if existing is None:
            db[name].create_index("recorded_at", name="retention", expireAfterSeconds=seconds)
        elif existing.get("expireAfterSeconds") != seconds:
            db.command("collMod", name, index={"name": "retention", "expireAfterSeconds": seconds})

    def write(self, documents: Sequence[dict]) -> int:
        def insert(db):
            total = 0
            for source, name in MONGO_COLLECTIONS.items():
                batch = [to_mongo(doc) for doc in documents if doc["source"] == source]
                total += insert_ignoring_duplicates(db[name], batch)
            return total

        return self._run(insert)

    def find(self, field: str, value: int, aggregate_type: str | None = None) -> list[dict]:
        if field == "aggregate":
            query = {"aggregate_type": aggregate_type, "aggregate_id": value}
        elif field in CORRELATIONS:
            query = {field: value}
        else:
            raise ValueError(f"cannot look documents up by {field!r}")

        def select(db):
            return [from_mongo(source, stored) for source, name in MONGO_COLLECTIONS.items()
                    for stored in db[name].find(query)]

        docs = self._run(select)
        docs.sort(key=lambda d: (d["recorded_at"], SOURCES.index(d["source"]), d["id"]))
        return docs

    def apply_retention(self, days: dict[str, int], now: datetime | None = None) -> list[str]:
        """Keep the TTL indexes at the configured ages and delete what is already past them."""
        now = now or datetime.now(UTC)

        def purge(db):
            done = []
            for source, name in MONGO_COLLECTIONS.items():
                if source not in days:
                    continue
                self._ensure_ttl(db, name, days[source])
                removed = db[name].delete_many({"recorded_at": {"$lt": now - timedelta(days=days[source])}})
                done.append(f"{name}: {removed.deleted_count} removed")
            return done

        return self._run(purge)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None
        self._db = None
