"""Fixtures for the payment-core tests: the pgTAP world loaded into a test's own database."""

from __future__ import annotations

import psycopg
import pytest

from carrierpay.paths import sql_root

WORLD_SQL = sql_root() / "tests" / "fixtures" / "world.sql"


def load_world(conn: psycopg.Connection) -> None:
    """Create the shared test world (carriers test_gb/test_ng, merchants acme/other, products).

    Its pg_temp helpers (settle, claim, pin) exist only on this connection.
    """
    conn.execute(WORLD_SQL.read_text())


@pytest.fixture
def world_url(db_url):
    """A fresh migrated database with the world committed in it (usable from many connections)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        load_world(conn)
    return db_url
