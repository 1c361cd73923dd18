"""Adding a node: move one partition's database to a new PostgreSQL cluster and repoint the map.

A partition never changes number and its rows never change partition (their ids carry it), so more
capacity means fewer partitions per machine: a deployment starts with a power-of-two number of
partitions (one PostgreSQL cluster each, several on a machine) and moves a partition's cluster to a
new machine when its machine is full. This is the online-by-copy form: the source partition is fenced
(no new connection from the front or the daemons; calls for its subscribers fail fast), its roles and
database are copied, the copy is migrated as the same partition, and the front points at it.
"""

from __future__ import annotations

import re
import subprocess

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from carrierpay import migrate
from carrierpay.embedded import find_bindir
from carrierpay.shards import ShardError
from carrierpay.shards.front import set_partition

# Tables whose row counts must match between source and copy before the front points at the copy.
COUNTED = ("procedure", "carrier_call", "journal", "ledger_entry", "subscription", "subscriber", "merchant")


def _partition_of(conn: psycopg.Connection) -> str | None:
    return conn.execute("select current_setting('carrierpay.partition', true)").fetchone()[0]


def _counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {table: conn.execute(sql.SQL("select count(*) from cp.{}").format(sql.Identifier(table))).fetchone()[0]
                for table in COUNTED}


def fence(source_url: str) -> None:
    """Stop new connections to the source (but its owner's) and end the ones it has."""
    with psycopg.connect(source_url, autocommit=True) as conn:
        database = conn.execute("select pg_catalog.current_database()").fetchone()[0]
        conn.execute(sql.SQL("revoke connect on database {} from public").format(sql.Identifier(database)))
        conn.execute("select pg_catalog.pg_terminate_backend(pid) from pg_catalog.pg_stat_activity "
                     "where datname = pg_catalog.current_database() and pid <> pg_catalog.pg_backend_pid()")


def move(front_url: str, partition: int, source_url: str, target_url: str) -> dict[str, int]:
    """Copy partition `partition` from source_url (its owner's URL) to the empty database at
    target_url (a superuser's URL on the new cluster) and point the front at it. Returns the row counts."""
    with psycopg.connect(source_url) as conn:
        if _partition_of(conn) != str(partition):
            raise ShardError(f"the source database is not partition {partition}")
    with psycopg.connect(target_url) as conn:
        if conn.execute("select count(*) from pg_catalog.pg_namespace where nspname = 'cp'").fetchone()[0]:
            raise ShardError("the target database is not empty")
    fence(source_url)
    bindir = find_bindir()
    target_server = dict(conninfo_to_dict(target_url), dbname="postgres")
    roles = subprocess.run([str(bindir / "pg_dumpall"), "--roles-only", "--dbname", source_url],
                           capture_output=True, text=True, check=True).stdout
    # The superuser that runs this already exists on the target and keeps its own password; every other
    # role comes across with its password verifier, so the front's login and merchant roles work unchanged.
    me = re.compile(rf'^(CREATE|ALTER) ROLE "?{re.escape(target_server.get("user", ""))}"?[ ;]')
    roles = "".join(line for line in roles.splitlines(keepends=True) if not me.match(line))
    subprocess.run([str(bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=0",
                    psycopg.conninfo.make_conninfo(**target_server)],
                   input=roles, capture_output=True, text=True, check=True)
    dump = subprocess.run([str(bindir / "pg_dump"), "--format=custom", source_url], capture_output=True, check=True)
    restored = subprocess.run([str(bindir / "pg_restore"), "--exit-on-error", "--dbname", target_url],
                              input=dump.stdout, capture_output=True, check=False)
    if restored.returncode != 0:
        raise ShardError(f"pg_restore failed: {restored.stderr.decode(errors='replace')[-500:]}")
    migrate.migrate(target_url, partition=partition)
    counts = _counts(source_url)
    if _counts(target_url) != counts:
        raise ShardError("the copy does not hold the rows of the source; the front still points at the source")
    set_partition(front_url, partition, target_url)
    return counts
