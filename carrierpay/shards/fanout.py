"""Operator configuration on every shard at once: one two-phase commit, or nothing anywhere.

`apply_admin` runs an admin.* function on every shard and the front's own bookkeeping in one
distributed transaction: each participant executes and PREPAREs; only when all have prepared does
the front commit its decision record (front.admin_change), and then every shard commits. A failure
before the decision rolls every participant back. A coordinator that dies after the decision leaves
prepared transactions that `recover` commits (their gid has a decision row) or rolls back (it has
none); `check` lists them with the configuration the shards disagree on.

Shards must be separate PostgreSQL clusters: admin.add_merchant creates a role, roles are cluster-wide,
and two prepared transactions of one cluster creating the same role would wait on each other (the
lock timeout below turns that into a clean failure).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from carrierpay.shards import ShardError
from carrierpay.shards.front import shard_credentials

GID_PREFIX = "carrierpay-admin-"
# Calls that belong to one shard (a call id names its shard), not to every shard.
NOT_FANNED_OUT = {"settle_call"}
# Secrets the first shard issues and every other shard (and the front's login) must share.
SHARED_SECRET_CALLS = {"add_merchant", "rotate_merchant_secret"}
FRONT_LOGIN_CALLS = {"add_merchant", "rotate_merchant_password"}
LOCK_TIMEOUT = "5s"


def tps_share(tps: int, partition: int, partitions: int) -> int:
    """A shard's part of a carrier's calls per second: the shares add up to the carrier's budget
    (every shard gets at least 1, so a budget below the partition count is exceeded by the difference)."""
    return max(1, tps // partitions + (1 if partition < tps % partitions else 0))


def shard_arguments(function: str, arguments: dict, partition: int, partitions: int) -> dict:
    if function == "onboard_carrier":
        spec = dict(arguments["p_spec"])
        tps = int((spec.get("throughput") or {}).get("tps", 10))
        spec["throughput"] = dict(spec.get("throughput") or {}, tps=tps_share(tps, partition, partitions))
        return dict(arguments, p_spec=spec)
    return arguments


def _call(conn: psycopg.Connection, function: str, arguments: dict) -> dict:
    query = sql.SQL("select admin.{}({})").format(
        sql.Identifier(function),
        sql.SQL(", ").join(sql.SQL("{} => {}").format(sql.Identifier(name), sql.Placeholder(name))
                           for name in arguments))
    values = {name: Jsonb(value) if isinstance(value, dict | list) else value for name, value in arguments.items()}
    return conn.execute(query, values).fetchone()[0]


@dataclass
class Change:
    gid: str
    function: str
    shards: list[psycopg.Connection] = field(default_factory=list)
    front: psycopg.Connection | None = None
    result: dict | None = None


def _connect_shards(front_url: str, change: Change) -> None:
    with psycopg.connect(front_url, autocommit=True) as front:
        partitions, login = shard_credentials(front)
    for _, connstr in partitions:
        change.shards.append(psycopg.connect(connstr, **login))


def prepare(front_url: str, function: str, arguments: dict) -> Change:
    """Phase one: execute everywhere and PREPARE; on any failure roll everything back and raise."""
    if not re.fullmatch(r"[a-z_]{1,63}", function) or function in NOT_FANNED_OUT:
        raise ShardError(f"admin.{function[:63]} is not a configuration call to apply on every shard")
    change = Change(GID_PREFIX + uuid.uuid4().hex, function)
    try:
        change.front = psycopg.connect(front_url)
        _connect_shards(front_url, change)
        first: dict | None = None
        for partition, conn in enumerate(change.shards):
            conn.tpc_begin(change.gid)
            conn.execute(sql.SQL("set local lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
            document = _call(conn, function, shard_arguments(function, arguments, partition, len(change.shards)))
            if first is None:
                first = document
            elif function in SHARED_SECRET_CALLS:
                _call(conn, "set_merchant_secret",
                      {"p_merchant": first["code"], "p_secret": first["webhook_secret"]})
        # Most admin functions answer with a document; the clock functions with a time or an interval.
        change.result = dict(first if isinstance(first, dict) else {"result": first}, partitions=len(change.shards))
        change.front.tpc_begin(change.gid)
        if function in FRONT_LOGIN_CALLS:
            if function == "add_merchant":
                change.front.execute("select front.register_merchant(%s, %s)",
                                     [change.result["code"], change.result["db_password"]])
            else:
                change.front.execute("select front.set_merchant_password(%s, %s)",
                                     [arguments["p_merchant"], change.result["db_password"]])
        change.front.execute("insert into front.admin_change (gid, function) values (%s, %s)",
                             [change.gid, function])
        for conn in change.shards:
            conn.tpc_prepare()
        change.front.tpc_prepare()
    except BaseException:
        abort(change)
        raise
    return change


def abort(change: Change) -> None:
    """Roll back every participant, prepared or not."""
    for conn in [*change.shards, *([change.front] if change.front else [])]:
        try:
            conn.tpc_rollback()
        except psycopg.Error:
            pass  # never began, or the server is gone: its transaction dies with the session
        conn.close()


def commit(change: Change) -> dict:
    """Phase two: the front's commit is the decision; then every shard commits."""
    change.front.tpc_commit()
    change.front.close()
    unfinished = []
    for partition, conn in enumerate(change.shards):
        try:
            conn.tpc_commit()
        except psycopg.Error:
            unfinished.append(partition)  # prepared there, and decided: recover commits it
        conn.close()
    if unfinished:
        raise ShardError(f"the change is decided but partitions {unfinished} have not committed it yet: "
                         "run carrierpay shards recover when they are reachable")
    return change.result


def apply_admin(front_url: str, function: str, arguments: dict) -> dict:
    """Run admin.<function>(arguments) on every shard, all or nothing. Returns the first shard's document."""
    return commit(prepare(front_url, function, arguments))


@dataclass
class Drift:
    configuration: list[tuple] = field(default_factory=list)  # (kind, key, missing_on, versions)
    in_doubt: list[tuple[int, str]] = field(default_factory=list)  # (partition or -1 for the front, gid)

    @property
    def clean(self) -> bool:
        return not self.configuration and not self.in_doubt


def check(front_url: str) -> Drift:
    """What the shards disagree on, and changes left prepared by a coordinator that stopped."""
    with psycopg.connect(front_url) as front:
        drift = Drift(configuration=front.execute(
            "select kind, key, missing_on, versions from report.configuration_drift order by kind, key").fetchall())
        drift.in_doubt = [(-1, gid) for (gid,) in front.execute(
            "select gid from pg_catalog.pg_prepared_xacts where gid like %s "
            "and database = pg_catalog.current_database()", [GID_PREFIX + "%"]).fetchall()]
        partitions, login = shard_credentials(front)
    for partition, connstr in partitions:
        with psycopg.connect(connstr, **login) as conn:
            for (gid,) in conn.execute("select gid from pg_catalog.pg_prepared_xacts "
                                       "where gid like %s and database = pg_catalog.current_database()",
                                       [GID_PREFIX + "%"]).fetchall():
                drift.in_doubt.append((partition, gid))
    return drift


def recover(front_url: str) -> list[tuple[int, str, str]]:
    """Finish the changes a stopped coordinator left prepared: commit those decided, roll back the rest."""
    done = []
    with psycopg.connect(front_url, autocommit=True) as front:
        for (gid,) in front.execute("select gid from pg_catalog.pg_prepared_xacts where gid like %s "
                                    "and database = pg_catalog.current_database()", [GID_PREFIX + "%"]).fetchall():
            front.execute(sql.SQL("rollback prepared {}").format(sql.Literal(gid)))
            done.append((-1, gid, "rolled back"))
        decided = {gid for (gid,) in front.execute("select gid from front.admin_change").fetchall()}
        partitions, login = shard_credentials(front)
    for partition, connstr in partitions:
        with psycopg.connect(connstr, autocommit=True, **login) as conn:
            for (gid,) in conn.execute("select gid from pg_catalog.pg_prepared_xacts where gid like %s "
                                       "and database = pg_catalog.current_database()", [GID_PREFIX + "%"]).fetchall():
                verb = "commit" if gid in decided else "rollback"
                conn.execute(sql.SQL(verb + " prepared {}").format(sql.Literal(gid)))
                done.append((partition, gid, "committed" if verb == "commit" else "rolled back"))
    return done
