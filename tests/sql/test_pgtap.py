"""Every pgTAP file in db/tests is one test item, run in its own fresh database."""

from __future__ import annotations

import pytest

from carrierpay.paths import sql_root
from carrierpay.tap import parse_tap, run_tap_file

TAP_FILES = sorted((sql_root() / "tests").glob("*.sql"))


@pytest.mark.parametrize("tap_file", TAP_FILES, ids=[p.name for p in TAP_FILES])
def test_pgtap_file(db_url, tap_file):
    report = run_tap_file(db_url, tap_file)
    assert report.ok, f"{tap_file.name}: {report.summary()}\n{report.output}"


def test_there_are_pgtap_files():
    assert TAP_FILES, "db/tests holds no pgTAP files"


def test_tap_judge_catches_failures_and_short_runs():
    assert parse_tap("1..2\nok 1 - a\nok 2 - b\n").ok
    assert not parse_tap("1..2\nok 1 - a\nnot ok 2 - b\n").ok
    assert not parse_tap("1..3\nok 1 - a\nok 2 - b\n").ok  # died before finishing the plan
    assert not parse_tap("ok 1 - a\n").ok  # no plan
