"""Fixtures for the HTTP API tests: the test world committed in a fresh database."""

from __future__ import annotations

import psycopg
import pytest

from tests.core.world import load_world


@pytest.fixture
def world_url(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        load_world(conn)
    return db_url


@pytest.fixture
def owner(world_url):
    with psycopg.connect(world_url, autocommit=True) as conn:
        yield conn
