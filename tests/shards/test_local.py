"""`carrierpay db up --shards 2`: a front and two partitions on this machine, each its own cluster."""

from __future__ import annotations

import os

import psycopg
import typer
from click.testing import CliRunner

from carrierpay.cli.main import app


def run(home, *args: str):
    return CliRunner().invoke(typer.main.get_command(app), list(args), prog_name="carrierpay",
                              env={"CARRIERPAY_HOME": str(home), "COLUMNS": "250", "CARRIERPAY_DATABASE_URL": ""})


def test_db_up_with_shards_starts_a_routed_front_over_separate_clusters(tmp_path_factory):
    home = tmp_path_factory.mktemp("sharded-home")
    os.chmod(home, 0o755)
    try:
        started = run(home, "db", "up", "--shards", "2")
        assert started.exit_code == 0, started.output
        urls = [line.split(": ", 1)[1].strip() for line in started.output.splitlines()
                if line.startswith(("front (", "partition 0 (", "partition 1 ("))]
        assert len(urls) == 3
        ports = {psycopg.conninfo.conninfo_to_dict(url)["port"] for url in urls}
        assert len(ports) == 3  # three servers, as three machines would be
        with psycopg.connect(urls[0]) as front:
            assert front.execute("select count(*) from front.list_partitions()").fetchone()[0] == 2
            assert front.execute("select count(*) from pg_catalog.pg_proc p join pg_catalog.pg_namespace n "
                                 "on n.oid = p.pronamespace where n.nspname = 'api'").fetchone()[0] >= 9
        for partition, url in enumerate(urls[1:]):
            with psycopg.connect(url) as shard:
                assert shard.execute("select current_setting('carrierpay.partition')").fetchone()[0] == str(partition)
        again = run(home, "db", "up", "--shards", "2")
        assert again.exit_code == 0, again.output
        assert "running on port" in again.output
        refused = run(home, "db", "up", "--shards", "4")
        assert refused.exit_code == 1 and "keeps its partition count" in refused.output
    finally:
        stopped = run(home, "db", "down", "--shards")
    assert stopped.exit_code == 0 and "stopped 3 cluster(s)" in stopped.output, stopped.output
