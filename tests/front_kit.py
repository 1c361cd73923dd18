"""The SQL-API tests through a front: the same test bodies, with their api.* calls routed by a PL/Proxy
front over two partitions (each its own embedded cluster), as a sharded deployment serves them.

A module opts in with `pytestmark = pytest.mark.sql_api`: each of its tests that takes the `owner`,
`merchant` or `attacker` fixture (and no single-node fixture such as `db_url` or `conn`) then runs
twice, `[node]` and `[front]` (tests/security/conftest.py). Through the front:

* the merchant's connection is its own login on the front (registered there as
  `carrierpay shards admin add_merchant` does);
* the owner's connection sends api.* calls to the front and every other statement (configuration,
  the test's look at cp.* tables) to every partition, answering with the partition that holds what
  the statement looks at: the partition of the number it names, else the one the front routed the
  test's latest api call to (by its number or id);
* an api function the front deliberately does not expose (NOT_THROUGH_THE_FRONT) skips the test,
  with the front's reason.

One front and two partitions serve the whole run; each test gets fresh partition databases (copies of
a migrated seed, migrated again as their partition) and the front's map is pointed at them.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from carrierpay import migrate
from carrierpay.embedded import EmbeddedCluster, create_available_extensions
from carrierpay.migrate import PARTITION_ID_BITS
from carrierpay.paths import sql_root
from carrierpay.shards import front
from carrierpay.shards.front import NOT_THROUGH_THE_FRONT, partition_connstr

SETTINGS = {"max_prepared_transactions": "10", "shared_buffers": "'32MB'", "max_connections": "60"}
SEED = "carrierpay_seed"
DATABASE = "carrierpay"
WORLD_SQL = sql_root() / "tests" / "fixtures" / "world.sql"
WORLD_MERCHANTS = ("acme", "other")
API_CALL = re.compile(r"\bapi\.([a-z_]+)\s*\(")
NUMBER = re.compile(r"^\+?\d{8,15}$")
NUMBER_IN_SQL = re.compile(r"'(\+\d{8,15})'")


def clusters_root(prefix: str) -> Path:
    """A new folder for a run's clusters, readable by the postgres user the clusters may run as."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("CARRIERPAY_TEST_TMPDIR", "/tmp")))
    os.chmod(root, 0o755)
    return root


def start_cluster(root: Path, name: str, database: str) -> EmbeddedCluster:
    """A running cluster for a front or a partition (prepared transactions on, for the fan-out's two-phase
    commit), with an empty database of that name."""
    home = root / name
    home.mkdir()
    os.chmod(home, 0o755)
    cluster = EmbeddedCluster(home, fast=True, settings=SETTINGS)
    cluster.init()
    cluster.start()
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(f"create database {database} template template0 encoding utf8")
    return cluster


@dataclass
class ApiFront:
    """A front over two partition clusters, for a whole run."""

    root: Path
    front: EmbeddedCluster
    shards: list[EmbeddedCluster]
    passwords: dict[str, str] = field(default_factory=dict)  # merchant code -> its front login's password

    @property
    def front_url(self) -> str:
        return self.front.url(DATABASE)

    @classmethod
    def start(cls) -> ApiFront:
        root = clusters_root("carrierpay-api-front-")
        made: list[EmbeddedCluster] = []
        try:
            for name in ("front", "shard0", "shard1"):
                made.append(start_cluster(root, name, DATABASE if name == "front" else SEED))
            seeds = []
            for cluster in made[1:]:
                create_available_extensions(cluster.url(SEED))
                seeds.append(cluster.url(SEED))
            # The twins are generated from the seeds' catalog; each test's databases are copies of them.
            front.init(made[0].url(DATABASE), seeds)
            for cluster in made[1:]:
                with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
                    conn.execute(f"alter database {SEED} with is_template true allow_connections false")
                    conn.execute("select pg_catalog.pg_terminate_backend(pid) from pg_catalog.pg_stat_activity "
                                 "where datname = %s", [SEED])
        except BaseException:
            for cluster in made:
                cluster.stop()
            shutil.rmtree(root, ignore_errors=True)
            raise
        return cls(root, made[0], made[1:])

    def stop(self) -> None:
        for cluster in [self.front, *self.shards]:
            cluster.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def register(self, code: str) -> str:
        """The merchant's login on the front (once a run: roles are cluster-wide); returns its password."""
        if code not in self.passwords:
            password = secrets.token_urlsafe(16)
            with psycopg.connect(self.front_url, autocommit=True) as conn:
                conn.execute("select front.register_merchant(%s, %s)", [code, password])
            self.passwords[code] = password
        return self.passwords[code]

    def login_url(self, code: str) -> str:
        params = psycopg.conninfo.conninfo_to_dict(self.front_url)
        params.update(user=f"cp_merchant_{code}", password=self.register(code))
        return psycopg.conninfo.make_conninfo(**params)

    def fresh_partitions(self) -> list[str]:
        """New partition databases for one test, with the front's map pointed at them."""
        name = f"f_{uuid.uuid4().hex[:12]}"
        urls = []
        for partition, cluster in enumerate(self.shards):
            with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
                conn.execute(f'create database "{name}" template {SEED}')
            # Database settings (the partition) and privileges do not travel with a template copy.
            migrate.migrate(cluster.url(name), partition=partition)
            urls.append(cluster.url(name))
        with psycopg.connect(self.front_url, autocommit=True) as conn:
            conn.execute("select front.set_cluster(%s)", [[partition_connstr(url) for url in urls]])
        return urls

    def drop(self, urls: list[str]) -> None:
        for cluster, url in zip(self.shards, urls, strict=True):
            name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
            with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
                conn.execute(f'drop database if exists "{name}" with (force)')


@dataclass
class FrontWorld:
    """One test's world through the front: its partitions, and the partition its latest api call went to."""

    api_front: ApiFront
    shard_urls: list[str]
    home: int = 0
    partition_of_number: dict[str, int] = field(default_factory=dict)

    def register_merchants(self) -> None:
        """Every merchant of the partitions gets its login on the front, as `shards admin add_merchant` does."""
        with psycopg.connect(self.shard_urls[0], autocommit=True) as conn:
            codes = [code for (code,) in conn.execute("select code from cp.merchant")]
        for code in codes:
            self.api_front.register(code)

    def partition_of(self, sql: str, params: Any) -> int | None:
        """The partition a statement is about: that of the first number it names, else that of an id of
        a partition past the first; None when it names neither."""
        values = list(params.values()) if isinstance(params, dict) else list(params or [])
        numbers = [v for v in values if isinstance(v, str) and NUMBER.match(v)] + NUMBER_IN_SQL.findall(sql)
        if numbers:
            if numbers[0] not in self.partition_of_number:
                with psycopg.connect(self.api_front.front_url, autocommit=True) as conn:
                    self.partition_of_number[numbers[0]] = conn.execute(
                        "select front.msisdn_hash(%s) & (front.partition_count() - 1)", [numbers[0]]).fetchone()[0]
            return self.partition_of_number[numbers[0]]
        ids = [v for v in values if isinstance(v, int) and not isinstance(v, bool) and v >> PARTITION_ID_BITS]
        return ids[0] >> PARTITION_ID_BITS if ids else None

    def follow(self, sql: str, params: Any) -> None:
        """Note the partition the front routes this api call to; skip a call the front does not route."""
        for name in API_CALL.findall(sql):
            if name in NOT_THROUGH_THE_FRONT:
                pytest.skip(f"api.{name} is not routed through the front: it {NOT_THROUGH_THE_FRONT[name]}")
        partition = self.partition_of(sql, params)
        if partition is not None:
            self.home = partition


class ThroughFront:
    """A connection to the front that notes where each api call goes (the merchant's, the attacker's)."""

    def __init__(self, conn: psycopg.Connection, world: FrontWorld) -> None:
        self._conn = conn
        self._world = world

    def execute(self, sql: Any, params: Any = None, **kwargs: Any) -> psycopg.Cursor:
        if isinstance(sql, str):
            self._world.follow(sql, params)
        return self._conn.execute(sql, params, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __enter__(self) -> ThroughFront:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._conn.close()


class OwnerThroughFront(ThroughFront):
    """The owner: api.* calls through the front; everything else on every partition, answered by the
    partition holding the test's subscriber (a statement failing on another partition is that
    partition not holding the rows the test looks at)."""

    def __init__(self, conn: psycopg.Connection, world: FrontWorld, shards: list[psycopg.Connection]) -> None:
        super().__init__(conn, world)
        self._shards = shards

    @classmethod
    def connect(cls, world: FrontWorld) -> OwnerThroughFront:
        return cls(psycopg.connect(world.api_front.front_url, autocommit=True), world,
                   [psycopg.connect(url, autocommit=True) for url in world.shard_urls])

    def execute(self, sql: Any, params: Any = None, **kwargs: Any) -> psycopg.Cursor:
        text = sql.decode() if isinstance(sql, bytes) else sql if isinstance(sql, str) else None
        if text is not None and API_CALL.search(text):
            return super().execute(sql, params, **kwargs)
        answer = None
        home = self._world.partition_of(text, params) if text is not None else None
        home = self._world.home if home is None else home
        for partition, conn in enumerate(self._shards):
            if partition == home:
                answer = conn.execute(sql, params, **kwargs)
            else:
                try:
                    conn.execute(sql, params, **kwargs)
                except psycopg.Error:
                    pass
        if text is not None and "admin.add_merchant" in text:
            self._world.register_merchants()
        return answer

    def __exit__(self, *exc: Any) -> None:
        for conn in [self._conn, *self._shards]:
            conn.close()


def load_world_everywhere(shard_urls: list[str]) -> None:
    """The test world's configuration on every partition, as `carrierpay shards admin` would put it."""
    for url in shard_urls:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(WORLD_SQL.read_text())
