from __future__ import annotations

import functools

import pytest

from tests.cli.kit import run_cli


@pytest.fixture
def cli(db_url):
    """`cli(*args)`: a command against the test's database."""
    return functools.partial(run_cli, db_url)
