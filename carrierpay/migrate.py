"""`carrierpay db migrate`: alembic revisions, then the repeatable SQL files, in one transaction.

Tables, types and indexes are versioned alembic revisions (db/migrations). Functions, views and
triggers (db/procedures, db/triggers) are repeatable: every file is CREATE OR REPLACE and is
re-applied when any file changed or any revision ran, so a revision that rebuilds a table
always gets its triggers back; a trigger file (one per table) is skipped when only other files
changed. A checksum per file is recorded so a second run changes nothing.

Re-applying the repeatable files takes no ACCESS EXCLUSIVE lock on a table (CREATE OR REPLACE
TRIGGER, retired names dropped through their functions in db/procedures/000_retired.sql), so a
deploy does not wait for, nor stop, the readers of the payment tables; a deploy that changes no
trigger file and runs no revision takes no lock on them at all. `lock_timeout` bounds how long any
statement of the run waits for a table lock: past it the run fails and changes nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from carrierpay.errors import MigrationError
from carrierpay.paths import sql_root

__all__ = ["MigrationError", "MigrationPlan", "migrate", "partition_id_range", "plan", "repeatable_files"]

# One key for every migrator of a database: concurrent runs queue instead of interleaving.
MIGRATION_LOCK_KEY = 0x43504D49  # "CPMI"
REPEATABLE_DIRS = ("procedures", "triggers", "privileges")

# A shard of a sharded deployment (docs/sharding.md) is one partition: its bigint ids are drawn from
# the partition's own block, so an id names the shard that holds it and the front routes it there.
# 2^44 ids per partition; ids stay below 2^53 (exact in JSON readers that use doubles) up to 512.
PARTITION_ID_BITS = 44
MAX_PARTITIONS = 512


def partition_id_range(partition: int) -> tuple[int, int]:
    """The first and last id a partition's sequences hand out."""
    return max(1, partition << PARTITION_ID_BITS), ((partition + 1) << PARTITION_ID_BITS) - 1


@dataclass
class MigrationPlan:
    pending_revisions: list[str] = field(default_factory=list)
    changed_files: list[str] = field(default_factory=list)

    @property
    def up_to_date(self) -> bool:
        return not self.pending_revisions and not self.changed_files


@dataclass
class RepeatableFile:
    name: str  # e.g. "procedures/220_api.sql"
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def repeatable_files(root: Path | None = None) -> list[RepeatableFile]:
    """Procedures first (triggers call them), each directory in file-name order."""
    root = root or sql_root()
    files = []
    for directory in REPEATABLE_DIRS:
        for path in sorted((root / directory).glob("*.sql")):
            files.append(RepeatableFile(f"{directory}/{path.name}", path))
    return files


def _alembic_config(root: Path) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(root / "migrations"))
    return cfg


def _engine(url: str):
    sa_url = url.replace("postgresql://", "postgresql+psycopg://", 1) if url.startswith("postgresql://") else url
    return create_engine(sa_url, poolclass=NullPool)


_BOOTSTRAP = """
create schema if not exists carrierpay_meta;
create table if not exists carrierpay_meta.repeatable_sql (
    file_name  text primary key,
    checksum   text not null,
    applied_at timestamptz not null default clock_timestamp()
);
comment on table carrierpay_meta.repeatable_sql is
    'Checksum of each db/procedures and db/triggers file as last applied by carrierpay db migrate';
"""


def _pending(conn, root: Path) -> MigrationPlan:
    script = ScriptDirectory.from_config(_alembic_config(root))
    context = MigrationContext.configure(
        conn, opts={"version_table": "alembic_version", "version_table_schema": "carrierpay_meta"}
    )
    current = set(context.get_current_heads())
    pending = []
    for rev in script.walk_revisions():  # newest first
        if rev.revision in current:
            break
        pending.append(rev.revision)
    pending.reverse()

    applied: dict[str, str] = {}
    exists = conn.execute(text("select to_regclass('carrierpay_meta.repeatable_sql') is not null")).scalar()
    if exists:
        applied = dict(conn.execute(text("select file_name, checksum from carrierpay_meta.repeatable_sql")).all())
    changed = [f.name for f in repeatable_files(root) if applied.get(f.name) != f.checksum]
    return MigrationPlan(pending_revisions=pending, changed_files=changed)


def plan(url: str, root: Path | None = None) -> MigrationPlan:
    """What `migrate` would do, without doing it."""
    root = root or sql_root()
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return _pending(conn, root)
    finally:
        engine.dispose()


def _line_of(sql: str, position: int | None) -> int | None:
    if not position:
        return None
    return sql.count("\n", 0, position - 1) + 1


def _apply_file(driver_conn: psycopg.Connection, item: RepeatableFile) -> None:
    sql = item.sql
    try:
        with driver_conn.cursor() as cur:
            cur.execute(sql.encode())  # bytes: no parameter parsing, several statements allowed
    except psycopg.Error as exc:
        diag = exc.diag
        line = _line_of(sql, int(diag.statement_position) if diag.statement_position else None)
        where = f"{item.name}:{line}" if line else item.name
        message = diag.message_primary or str(exc)
        context = f" ({diag.context.strip().splitlines()[0]})" if diag.context else ""
        raise MigrationError(f"{where}: {message}{context}") from exc


def _needs_applying(item: RepeatableFile, todo: MigrationPlan) -> bool:
    """Every file when a revision ran (it may have rebuilt a table and lost its triggers) or any
    function changed (a file may use what another defines); a trigger file only when it changed
    itself, as (re)creating a trigger locks its table against writes until the run commits."""
    if todo.pending_revisions or not item.name.startswith("triggers/"):
        return True
    return item.name in todo.changed_files


def _set_lock_timeout(conn, value: str) -> None:
    try:
        conn.execute(text("select set_config('lock_timeout', :value, true)"), {"value": value})
    except Exception as exc:  # the server's own words say what a valid interval is
        raise MigrationError(f"lock timeout {value[:40]!r}: {getattr(exc, 'orig', exc)}") from exc


def migrate(
    url: str, root: Path | None = None, *, revision: str = "head", lock_timeout: str | None = None,
    partition: int | None = None,
) -> MigrationPlan:
    """Bring the database to the latest state in one transaction. Returns what was done.

    `revision` other than head stops at that revision and skips the repeatable files (they are
    written for the latest tables); it exists to prove step-by-step upgrades reach the same schema.
    `lock_timeout` (a PostgreSQL interval such as "2s") applies to the run once it holds the
    migration lock: a run that would queue behind the payment traffic fails instead of stalling it.
    `partition` makes the database that shard of a sharded deployment (recorded as the database
    setting carrierpay.partition; a database never changes partition).
    """
    root = root or sql_root()
    engine = _engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("select pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            if lock_timeout is not None:
                _set_lock_timeout(conn, lock_timeout)
            conn.exec_driver_sql(_BOOTSTRAP.replace("%", "%%"))
            todo = _pending(conn, root)
            if todo.up_to_date:
                conn.execute(text("select cp.restrict_temporary_tables()"))
                if partition is not None:
                    _claim_partition(conn, partition)
                return todo
            cfg = _alembic_config(root)
            cfg.attributes["connection"] = conn
            try:
                command.upgrade(cfg, revision)
            except Exception as exc:  # alembic wraps driver errors; keep the revision in the message
                raise MigrationError(f"alembic upgrade failed: {exc}") from exc
            if revision != "head":
                return todo
            driver_conn = conn.connection.driver_connection
            for item in repeatable_files(root):
                if not _needs_applying(item, todo):
                    continue
                _apply_file(driver_conn, item)
                conn.execute(
                    text(
                        "insert into carrierpay_meta.repeatable_sql (file_name, checksum) "
                        "values (:name, :sum) on conflict (file_name) do update "
                        "set checksum = excluded.checksum, applied_at = clock_timestamp()"
                    ),
                    {"name": item.name, "sum": item.checksum},
                )
            if partition is not None:
                _claim_partition(conn, partition)
            return todo
    finally:
        engine.dispose()


def _claim_partition(conn, partition: int) -> None:
    """Record the database's partition and move its bigint id sequences into the partition's block."""
    if not 0 <= partition < MAX_PARTITIONS:
        raise MigrationError(f"partition {partition} is outside 0..{MAX_PARTITIONS - 1}")
    recorded = conn.execute(text("select current_setting('carrierpay.partition', true)")).scalar()
    if recorded not in (None, "") and int(recorded) != partition:
        raise MigrationError(f"this database is partition {recorded}; it cannot become partition {partition}")
    low, high = partition_id_range(partition)
    sequences = conn.execute(text(
        "select pg_catalog.format('%I.%I', schemaname, sequencename), min_value, max_value, last_value "
        "from pg_catalog.pg_sequences where schemaname = 'cp' and data_type = 'bigint'::regtype"
    )).all()
    for name, min_value, max_value, last_value in sequences:
        if last_value is not None and last_value > high:
            raise MigrationError(f"{name} is already past partition {partition}'s ids ({last_value})")
        restart = f" restart with {low}" if last_value is None or last_value < low else ""
        if (min_value, max_value) != (low, high) or restart:
            conn.exec_driver_sql(f"alter sequence {name} minvalue {low} maxvalue {high} start with {low}{restart}")
    database = conn.execute(text("select pg_catalog.current_database()")).scalar()
    conn.exec_driver_sql(f"alter database \"{database}\" set carrierpay.partition = '{partition}'")
