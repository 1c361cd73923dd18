"""`carrierpay shards …` against the test's front: map, admin through the two-phase commit, check."""

from __future__ import annotations

import json

import psycopg
import typer
from click.testing import CliRunner

from carrierpay.cli.main import app
from tests.shards.conftest import merchant


def run(*args: str):
    return CliRunner().invoke(typer.main.get_command(app), list(args), env={"COLUMNS": "200"},
                              prog_name="carrierpay")


def test_the_commands_show_the_map_apply_admin_calls_and_check(sharded):
    merchant(sharded, "cli_shop")
    shown = run("shards", "map", "--front", sharded.front_url)
    assert shown.exit_code == 0, shown.output
    assert "dbname=carrierpay" in shown.output and "password" not in shown.output
    added = run("shards", "admin", "add_product", "--arg", "p_merchant=cli_shop", "--arg", "p_code=cli",
                "--arg", "p_name=From the CLI", "--front", sharded.front_url)
    assert added.exit_code == 0, added.output
    assert json.loads(added.output)["partitions"] == 2
    for url in sharded.shard_urls:
        with psycopg.connect(url) as conn:
            assert conn.execute("select name from cp.product where code = 'cli'").fetchone() == ("From the CLI",)
    clean = run("shards", "check", "--front", sharded.front_url)
    assert clean.exit_code == 0, clean.output
    with psycopg.connect(sharded.shard_urls[0]) as conn:
        conn.execute("select admin.add_product('cli_shop', 'cli', 'Changed on one shard')")
    drifted = run("shards", "check", "--front", sharded.front_url)
    assert drifted.exit_code == 1
    assert "cli_shop/cli" in drifted.output
    refused = run("shards", "admin", "settle_call", "--json-arg", "p_call_id=1", "--front", sharded.front_url)
    assert refused.exit_code == 1 and "not a configuration call" in refused.output
    sharded.admin("add_product", p_merchant="cli_shop", p_code="cli", p_name="From the CLI")
