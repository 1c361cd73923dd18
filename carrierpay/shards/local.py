"""A sharded deployment on one machine (`carrierpay db up --shards N`): a front and N partitions, each
its own embedded PostgreSQL cluster with its own port and data directory, as separate machines would
be. They live under $CARRIERPAY_HOME/sharded; the single-node cluster of `carrierpay db up` is untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from carrierpay import config
from carrierpay.embedded import EmbeddedCluster, create_available_extensions
from carrierpay.shards import ShardError
from carrierpay.shards import front as front_db

# Admin changes are two-phase commits, in which the front takes part too.
SETTINGS = {"max_prepared_transactions": "20", "shared_buffers": "'64MB'"}


def _root(home: Path) -> Path:
    return home / "sharded"


def existing_partitions(home: Path) -> int:
    return len(list(_root(home).glob("partition-*")))


def clusters(home: Path, partitions: int, fast: bool = False) -> tuple[EmbeddedCluster, list[EmbeddedCluster]]:
    root = _root(home)
    for name in ["front", *(f"partition-{k}" for k in range(partitions))]:
        (root / name).mkdir(parents=True, exist_ok=True)
    return (EmbeddedCluster(root / "front", fast=fast, settings=SETTINGS),
            [EmbeddedCluster(root / f"partition-{k}", fast=fast, settings=SETTINGS) for k in range(partitions)])


def up(home: Path, partitions: int, say: Callable[[str], None] = print, *,
       fast: bool = False) -> tuple[str, list[str]]:
    """Create (first time) and start the front and the partitions, and build the front. Returns the URLs."""
    if partitions <= 0 or partitions & (partitions - 1):
        raise ShardError(f"a cluster has a power-of-two number of partitions, not {partitions}")
    already = existing_partitions(home)
    if already and already != partitions:
        raise ShardError(f"{_root(home)} already holds {already} partitions: a cluster keeps its partition count")
    front, parts = clusters(home, partitions, fast)
    for name, cluster in [("front", front), *((f"partition {k}", c) for k, c in enumerate(parts))]:
        if cluster.init():
            say(f"{name}: created {cluster.describe_location()}")
        say(f"{name}: {'started' if cluster.start() else 'running'} on port {cluster.port}")
        cluster.ensure_database(config.DATABASE_NAME)
    shard_urls = [cluster.url(config.DATABASE_NAME) for cluster in parts]
    for url in shard_urls:
        create_available_extensions(url)
    front_db.init(front.url(config.DATABASE_NAME), shard_urls)
    return front.url(config.DATABASE_NAME), shard_urls


def down(home: Path) -> int:
    """Stop the front and every partition under the home; returns how many were running."""
    if not _root(home).exists():
        return 0
    front, parts = clusters(home, existing_partitions(home))
    return sum(1 for cluster in [front, *parts] if cluster.stop())
