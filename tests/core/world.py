"""Load db/tests/fixtures/world.sql (the pgTAP world) into a pytest connection."""

from __future__ import annotations

import re

import psycopg

from carrierpay.paths import sql_root


def load_world(conn: psycopg.Connection) -> None:
    sql = (sql_root() / "tests" / "fixtures" / "world.sql").read_text()
    sql = re.sub(r"^\\.*$", "", sql, flags=re.MULTILINE)  # psql meta-commands
    conn.execute(sql.encode())


def pin_sent_to(conn: psycopg.Connection, msisdn: str) -> str:
    """The latest PIN sent to a number, as its handset shows it (the world's pg_temp.pin sends the SMS first)."""
    return conn.execute("select pg_temp.pin(%s)", [msisdn]).fetchone()[0]


def settle(conn: psycopg.Connection, procedure_id: int, outcome: str, reason: str | None = None) -> dict:
    return conn.execute("select pg_temp.settle(%s, %s, %s)", [procedure_id, outcome, reason]).fetchone()[0]


def claim(conn: psycopg.Connection, carrier: str) -> list[dict]:
    return [row[0] for row in conn.execute("select pg_temp.claim(%s)", [carrier]).fetchall()]
