"""`carrierpay db migrate --partition k`: a database's ids come from its partition's block, for good."""

from __future__ import annotations

import psycopg
import pytest

from carrierpay import migrate
from carrierpay.errors import MigrationError


def test_a_partitions_sequences_hand_out_its_own_block_and_it_keeps_its_partition(db_url):
    migrate.migrate(db_url, partition=3)
    low, high = migrate.partition_id_range(3)
    assert (low, high) == (3 << 44, (4 << 44) - 1)
    with psycopg.connect(db_url) as conn:
        ranges = set(conn.execute("select min_value, max_value from pg_catalog.pg_sequences "
                                  "where schemaname = 'cp' and data_type = 'bigint'::regtype").fetchall())
        assert ranges == {(low, high)}
        assert conn.execute("select current_setting('carrierpay.partition', true)").fetchone()[0] == "3"
        assert conn.execute("select nextval('cp.procedure_procedure_id_seq')").fetchone()[0] == low
    migrate.migrate(db_url, partition=3)  # a second run changes nothing
    with pytest.raises(MigrationError, match="partition 3"):
        migrate.migrate(db_url, partition=2)
    with pytest.raises(MigrationError, match="outside"):
        migrate.migrate(db_url, partition=512)
