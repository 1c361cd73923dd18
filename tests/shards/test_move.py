"""Adding a node: partition 1 moves to a new PostgreSQL cluster; its subscribers and ids follow it,
and the old place takes no more calls. (Runs last in this folder: it changes the shared world.)"""

from __future__ import annotations

import psycopg
import pytest

from carrierpay.migrate import PARTITION_ID_BITS
from carrierpay.shards import fanout, move
from tests.front_kit import DATABASE, start_cluster
from tests.shards.conftest import login_url, merchant, msisdn_on


def test_a_partition_moves_to_a_new_cluster_with_its_subscribers_and_ids(sharded, tmp_path_factory):
    document = merchant(sharded, "moving_shop")
    number = msisdn_on(sharded, 1, 800)
    with psycopg.connect(login_url(sharded, document), autocommit=True) as api:
        before = api.execute("select api.charge('moving_shop', %s, 'gems', 'before-move')", [number]).fetchone()[0]
    root = tmp_path_factory.mktemp("new-node")
    root.chmod(0o755)
    new_node = start_cluster(root, "shard1b", DATABASE)
    sharded.clusters.append(new_node)  # stopped with the others
    source = sharded.shard_urls[1]
    counts = move.move(sharded.front_url, 1, source, new_node.url(DATABASE))
    assert counts["procedure"] >= 1
    sharded.shard_urls[1] = new_node.url(DATABASE)

    with psycopg.connect(login_url(sharded, document), autocommit=True) as api:
        # An id issued before the move is found at the new place; the subscriber's next charge lands there.
        found = api.execute("select api.payment('moving_shop', %s)", [before["id"]]).fetchone()[0]
        assert found["msisdn"] == number
        after = api.execute("select api.charge('moving_shop', %s, 'gems', 'after-move')", [number]).fetchone()[0]
        assert after["id"] >> PARTITION_ID_BITS == 1 and after["id"] > before["id"]
        # A repeat of a key the old place answered is answered the same by the new one.
        again = api.execute("select api.charge('moving_shop', %s, 'gems', 'before-move')", [number]).fetchone()[0]
        assert again == before
    with psycopg.connect(new_node.url(DATABASE)) as conn:
        assert conn.execute("select count(*) from cp.procedure where procedure_id = any(%s)",
                            [[before["id"], after["id"]]]).fetchone()[0] == 2
    with psycopg.connect(source) as conn:
        assert conn.execute("select count(*) from cp.procedure where procedure_id = %s",
                            [after["id"]]).fetchone()[0] == 0
    # The old place is fenced: the front's login cannot reach it any more.
    params = psycopg.conninfo.conninfo_to_dict(source)
    with psycopg.connect(sharded.front_url) as front:
        _, login = fanout.shard_credentials(front)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(psycopg.conninfo.make_conninfo(**dict(params, **login))).close()
    # Configuration through the front reaches the new place, and nothing drifted.
    sharded.admin("add_product", p_merchant="moving_shop", p_code="after", p_name="After")
    assert fanout.check(sharded.front_url).clean
