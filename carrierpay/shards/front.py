"""The front database: its SQL files (db/front), the cluster map, and the api.* twins.

The twins are generated from the shards' own catalog (pg_proc of schema api, read through the
cluster), so an api function added to the shards gets its front twin at the next `carrierpay shards
sync`, and one the front cannot route stops the sync with its name instead of being left out.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from carrierpay import migrate
from carrierpay.paths import sql_root
from carrierpay.shards import ShardError

SHARD_LOGIN = "carrierpay_front"
CLUSTER = "carrierpay_shards"
# Applied after the twins, in this order: the lists merged on the front, then the privileges.
AFTER_TWINS = ("lists.sql", "roles.sql")
# A node's own files the front applies as they are (after its schema, before the twins): a rule the
# front must keep exactly as every node does has one source (its errors and who may act for a
# merchant; the paging of its merged lists).
SHARED_WITH_THE_NODES = ("procedures/005_callers.sql", "procedures/225_paging.sql")


@dataclass(frozen=True)
class Twin:
    """An api function of the front: a PL/Proxy function that runs the shard's function of the same
    name where the call belongs, wrapped so that a shard that cannot be reached is one clear error."""

    name: str
    arguments: str  # with defaults, as the merchant calls it
    identity_arguments: str
    result: str
    argument_names: tuple[str, ...]
    route: str

    @property
    def ddl(self) -> list[str]:
        call = ", ".join(self.argument_names)
        return [
            f"create function front.proxy_{self.name}({self.identity_arguments}) returns {self.result}\n"
            "language plproxy\n"
            "set search_path = pg_catalog, cp, pg_temp\n"
            f"as $proxy$\n    cluster '{CLUSTER}';\n    run on {self.route};\n    target api.{self.name};\n$proxy$",
            f"create function api.{self.name}({self.arguments}) returns {self.result}\n"
            "language plpgsql security definer\n"
            "set search_path = pg_catalog, cp, pg_temp\n"
            "as $twin$\nbegin\n"
            f"    return front.proxy_{self.name}({call});\n"
            "exception when internal_error then\n"
            # PL/Proxy's connect failure: nothing reached the shard, so nothing was done anywhere.
            "    if sqlerrm like '%PQconnectPoll%' then\n"
            "        perform cp.fail('CP162', 'the partition that holds this call cannot be reached; nothing was '\n"
            "                                 'done: retry later with the same idempotency key');\n"
            "    end if;\n"
            "    raise;\n"
            "end\n$twin$",
        ]


def front_files() -> tuple[list, list]:
    """The SQL files applied before the twins are generated (the front's own in name order, then the node
    files it shares), and those applied after."""
    files = sorted((sql_root() / "front").glob("*.sql"))
    before = [f for f in files if f.name not in AFTER_TWINS] + [sql_root() / name for name in SHARED_WITH_THE_NODES]
    return before, [sql_root() / "front" / name for name in AFTER_TWINS]


def partition_connstr(url: str) -> str:
    """A shard's URL as a cluster map entry: the same place, without user and password."""
    params = {k: v for k, v in conninfo_to_dict(url).items() if k not in ("user", "password")}
    return make_conninfo(**params)


# api functions with no single partition to run on, which the front answers itself from every
# partition's answers (db/front/lists.sql): a page of all a merchant's payments or subscriptions.
MERGED_ON_THE_FRONT = ("list_payments", "list_subscriptions")
# api functions the front deliberately does not expose, each with the reason (none today); the
# SQL-API tests skip their front run for a call of one (tests/front_kit.py).
NOT_THROUGH_THE_FRONT: dict[str, str] = {}


def route_for(name: str, argument_names: list[str], argument_types: list[str] | None = None) -> str:
    """How the front finds the shard of a call, from the function's parameter names (and types)."""
    types = dict(zip(argument_names, argument_types or [], strict=False))
    if not argument_names or argument_names[0] != "p_merchant":
        raise ShardError(f"api.{name} does not take p_merchant first: the front cannot authorize it")
    if "p_msisdn" in argument_names:
        return "front.route_msisdn(p_merchant, p_msisdn)"
    ids = [arg for arg in argument_names if arg.startswith("p_") and arg.endswith("_id")]
    if ids:
        if types.get(ids[0]) == "text":
            return f"front.route_text_id(p_merchant, {ids[0]})"
        return f"front.route_id(p_merchant, {ids[0]})"
    if "p_request" in argument_names:
        return "front.route_request(p_merchant, p_request)"
    raise ShardError(f"api.{name} has neither p_msisdn nor an id parameter: the front cannot route it")


def argument_types(identity_arguments: str) -> list[str]:
    """The types of 'p_a text, p_b bigint' (our api functions take no type with a comma in it)."""
    return [part.strip().split(" ", 1)[1] if " " in part.strip() else "" for part in identity_arguments.split(",")
            if part.strip()]


def twins(conn: psycopg.Connection) -> list[Twin]:
    """The api functions every shard has, as front twins; shards that disagree stop the sync."""
    rows = conn.execute(
        "select partition, name, arguments, identity_arguments, result, argument_names "
        "from front.shard_api_functions()"
    ).fetchall()
    by_partition: dict[str, set[tuple]] = {}
    for partition, name, arguments, identity, result, names in rows:
        by_partition.setdefault(partition, set()).add((name, arguments, identity, result, tuple(names or ())))
    catalogs = list(by_partition.values())
    if not catalogs:
        raise ShardError("the shards expose no api functions: migrate them first")
    if any(catalog != catalogs[0] for catalog in catalogs):
        raise ShardError("the shards' api functions differ: migrate every shard to the same version first")
    made = []
    for name, arguments, identity, result, names in sorted(catalogs[0]):
        if name in NOT_THROUGH_THE_FRONT or name in MERGED_ON_THE_FRONT:
            continue
        if result.lower().startswith(("setof ", "table(", "table ")):
            raise ShardError(f"api.{name} returns a set: the front's twins return one value")
        made.append(Twin(name, arguments, identity, result, names,
                          route_for(name, list(names), argument_types(identity))))
    return made


def _apply_front(conn: psycopg.Connection, connstrs: list[str] | None, login_password: str | None) -> list[Twin]:
    files, after_twins = front_files()
    for path in files:
        conn.execute(path.read_text())
    if connstrs is not None:
        conn.execute("select front.set_cluster(%s)", [connstrs])
    if login_password is not None:
        conn.execute("select front.set_shard_login(%s, %s)", [SHARD_LOGIN, login_password])
    made = twins(conn)
    # Drop every twin and make the current set: a function retired on the shards leaves the front too.
    for (signature,) in conn.execute(
        "select p.oid::regprocedure::text from pg_catalog.pg_proc p "
        "join pg_catalog.pg_namespace n on n.oid = p.pronamespace "
        "where n.nspname = 'api' or (n.nspname = 'front' and p.proname like 'proxy\\_%')"
    ).fetchall():
        conn.execute(f"drop function {signature}")
    for twin in made:
        for statement in twin.ddl:
            conn.execute(statement)
    for path in after_twins:
        conn.execute(path.read_text())
    return made


def init(front_url: str, shard_urls: list[str]) -> list[Twin]:
    """Make shard k of the list partition k (migrating it), and build the front over them."""
    count = len(shard_urls)
    if count == 0 or count & (count - 1):
        raise ShardError(f"a cluster has a power-of-two number of partitions, not {count}")
    for partition, url in enumerate(shard_urls):
        migrate.migrate(url, partition=partition)
    password = secrets.token_urlsafe(24)
    for url in shard_urls:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("set password_encryption = 'scram-sha-256'")
            conn.execute(sql.SQL("alter role {} with login password {}").format(
                sql.Identifier(SHARD_LOGIN), sql.Literal(password)))
    with psycopg.connect(front_url) as conn:
        return _apply_front(conn, [partition_connstr(url) for url in shard_urls], password)


def sync(front_url: str) -> list[Twin]:
    """Re-apply the front's files and regenerate the twins (after the shards were migrated)."""
    with psycopg.connect(front_url) as conn:
        return _apply_front(conn, None, None)


def set_partition(front_url: str, partition: int, shard_url: str) -> None:
    """Point one partition of the map at another place (after its database was moved there)."""
    with psycopg.connect(front_url) as conn:
        current = [connstr for _, connstr in conn.execute("select * from front.list_partitions()").fetchall()]
        if not 0 <= partition < len(current):
            raise ShardError(f"the cluster has no partition {partition}")
        current[partition] = partition_connstr(shard_url)
        conn.execute("select front.set_cluster(%s)", [current])


def shard_credentials(conn: psycopg.Connection) -> tuple[list[tuple[int, str]], dict[str, str]]:
    """The map and the front's shard login, for tools that talk to every shard (front owner only)."""
    partitions = conn.execute("select partition, connstr from front.list_partitions()").fetchall()
    row = conn.execute(
        "select umoptions from pg_catalog.pg_user_mappings where srvname = %s and usename = 'public'", [CLUSTER]
    ).fetchone()
    if not partitions or row is None or row[0] is None:
        raise ShardError("the front has no cluster map or shard login: run carrierpay shards init")
    login = dict(option.split("=", 1) for option in row[0])
    return partitions, {"user": login["user"], "password": login["password"]}
