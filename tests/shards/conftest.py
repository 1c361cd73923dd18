"""A sharded carrierpay for the tests of this folder: a front and two shards, each its own embedded
PostgreSQL cluster (separate ports and data directories, as separate machines would be), built once
per run. Tests share it, so each uses merchant codes and numbers of its own."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import psycopg
import pytest

from carrierpay.embedded import EmbeddedCluster, create_available_extensions
from carrierpay.shards import fanout, front
from carrierpay.simulators import Simulator
from carrierpay.simulators.fleet import spec_for
from tests.front_kit import DATABASE, clusters_root, start_cluster

# A carrier whose numbers the tests use (+447700900…), in the spec form admin.onboard_carrier takes.
CARRIER = {
    "code": "shard_gb", "name": "Shard GB", "country": "GB", "mcc": "234", "mnc": "15", "currency": "GBP",
    "timezone": "Europe/London", "number_ranges": ["+447700"], "regulation": "DEFAULT",
    "rules": {"optin_one_time": False}, "throughput": {"tps": 21},
    "operations": {"charge": {"pattern": "sync"}, "refund": {"pattern": "sync"}, "balance": {"pattern": "sync"},
                   "send_sms": {}},
}


@dataclass
class Sharded:
    front_url: str
    shard_urls: list[str]
    clusters: list[EmbeddedCluster]

    def admin(self, function: str, **arguments) -> dict:
        return fanout.apply_admin(self.front_url, function, arguments)


@pytest.fixture(scope="session")
def sharded():
    root = clusters_root("carrierpay-shards-")
    clusters: list[EmbeddedCluster] = []
    try:
        for name in ("front", "shard0", "shard1"):
            clusters.append(start_cluster(root, name, DATABASE))
        shard_urls = [cluster.url(DATABASE) for cluster in clusters[1:]]
        for url in shard_urls:
            create_available_extensions(url)
        front.init(clusters[0].url(DATABASE), shard_urls)
        world = Sharded(clusters[0].url(DATABASE), shard_urls, clusters)
        world.admin("onboard_carrier", p_spec=CARRIER)
        yield world
    finally:
        for cluster in clusters:
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


def merchant(sharded: Sharded, code: str) -> dict:
    """A merchant (through the front, on every shard) with a product priced on the test carrier."""
    document = sharded.admin("add_merchant", p_code=code, p_name=code.title())
    sharded.admin("add_product", p_merchant=code, p_code="gems", p_name="Gems")
    sharded.admin("add_price_point", p_merchant=code, p_product="gems", p_plan="one_time", p_amount_minor=300,
                  p_currency="GBP", p_variant="gems_100", p_carrier="shard_gb")
    return document


def simulated_merchant(sharded: Sharded, code: str, sim: Simulator, carrier: str = "oneapi_gb") -> dict:
    """A merchant as `merchant` makes one whose gems also sell on `carrier`, simulated by `sim` (the shards'
    clock set to the simulator's)."""
    sharded.admin("set_clock", p_at=sim.clock.now())
    sharded.admin("onboard_carrier", p_spec=spec_for(carrier, sim.url, tps=100, rules={"optin_one_time": False}))
    document = merchant(sharded, code)
    sharded.admin("add_price_point", p_merchant=code, p_product="gems", p_plan="one_time", p_amount_minor=300,
                  p_currency="GBP", p_variant="gems_100", p_carrier=carrier)
    return document


def shard_holds(sharded: Sharded, partition: int, table: str, column: str, value) -> bool:
    """Whether a shard's own table has the row (read as the shard's owner, not through the front)."""
    with psycopg.connect(sharded.shard_urls[partition]) as conn:
        return conn.execute(f"select exists (select 1 from cp.{table} where {column} = %s)", [value]).fetchone()[0]


def login_url(sharded: Sharded, document: dict) -> str:
    """The front URL for a merchant's own login (the password the first shard issued)."""
    params = psycopg.conninfo.conninfo_to_dict(sharded.front_url)
    params.update(user=document["db_role"], password=document["db_password"])
    return psycopg.conninfo.make_conninfo(**params)


def msisdn_on(sharded: Sharded, partition: int, start: int = 0, prefix: str = "+447700") -> str:
    """A number (of the test carrier, unless another prefix is given) that the front routes to `partition`."""
    with psycopg.connect(sharded.front_url) as conn:
        for n in range(start, start + 1000):
            number = prefix + str(n).zfill(13 - len(prefix))
            if conn.execute("select front.msisdn_hash(%s) & (front.partition_count() - 1)",
                            [number]).fetchone()[0] == partition:
                return number
    raise AssertionError("no number for that partition")
