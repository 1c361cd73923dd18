"""Load db/tests/fixtures/world.sql (the pgTAP world) into a pytest connection."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

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


def fire_together(url: str | Callable[[], Any], n: int, sql: str, params_for) -> list[tuple[str, object]]:
    """Run `sql` from n connections (to a URL, or each made by a factory such as the `api_connect` fixture)
    released at the same moment; each gives ('ok', row) or ('error', sqlstate)."""
    connect = url if callable(url) else lambda: psycopg.connect(url, autocommit=True)
    connections = [connect() for _ in range(n)]
    barrier = threading.Barrier(n)

    def one(i: int):
        barrier.wait(timeout=30)
        try:
            return "ok", connections[i].execute(sql, params_for(i)).fetchone()[0]
        except psycopg.Error as exc:
            return "error", exc.sqlstate

    try:
        with ThreadPoolExecutor(max_workers=n) as pool:
            return list(pool.map(one, range(n)))
    finally:
        for connection in connections:
            connection.close()
