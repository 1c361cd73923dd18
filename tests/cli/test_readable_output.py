"""What people read at 80 columns: every number and name whole in the reports, the demo's tables and
the help of every command; CSV and JSON carrying every column for scripts."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
from decimal import Decimal

import pytest
from click.testing import CliRunner
from rich.console import Console

from carrierpay import queries
from carrierpay.demo import amount, print_report
from tests.cli.kit import run_cli
from tests.core.world import claim, load_world, settle

LONG_CARRIER = "aggregator_nigeria_mtn"
LONG_NAME = "Aggregator Nigeria (MTN and Airtel)"
BIG_PRICE = 968_123_456  # minor units: "9,681,234.56" is what the demo prints, "968123456" the reports


def run(db_url: str, *args: str) -> subprocess.CompletedProcess:
    return run_cli(db_url, *args, columns=80, timeout=120)


@pytest.fixture
def business(conn, db_url):
    """The test world, a carrier with a long code and name, and settled, failed and refunded charges,
    some of them large."""
    load_world(conn)
    conn.execute("select admin.onboard_carrier(%s::jsonb)", [json.dumps({
        "code": LONG_CARRIER, "name": LONG_NAME, "country": "NG", "mcc": "621", "mnc": "30", "currency": "NGN",
        "timezone": "Africa/Lagos", "number_ranges": ["+234806"], "regulation": "NG",
        "operations": {"charge": {"pattern": "sync"}, "refund": {"pattern": "sync"}, "send_sms": {"pattern": "sync"}},
    })])
    conn.execute("select admin.add_price_point('acme', 'gems', 'one_time', %s, 'NGN', 'gems_vault', "
                 "p_carrier => 'test_ng')", [BIG_PRICE])
    for price, variant in ((BIG_PRICE, "gems_vault"), (20000, "gems_100")):
        conn.execute("select admin.add_price_point('acme', 'gems', 'one_time', %s, 'NGN', %s, p_carrier => %s)",
                     [price, variant, LONG_CARRIER])
    charges = [("+2348020000001", "test_ng", BIG_PRICE, "succeeded"),
               ("+2348020000002", "test_ng", BIG_PRICE, "succeeded"),
               ("+2348020000003", "test_ng", 20000, "succeeded"),
               ("+2348020000004", "test_ng", 20000, "failed"),
               ("+2348060000001", LONG_CARRIER, BIG_PRICE, "succeeded"),
               ("+2348060000002", LONG_CARRIER, 20000, "succeeded")]
    paid = []
    for n, (msisdn, carrier, price, outcome) in enumerate(charges):
        charge = conn.execute("select api.charge('acme', %s, 'gems', %s, %s)",
                              [msisdn, f"order-{n}", price]).fetchone()[0]
        claim(conn, carrier)
        settle(conn, charge["id"], outcome, None if outcome == "succeeded" else "insufficient_funds")
        if outcome == "succeeded":
            paid.append((carrier, charge["id"]))
    refund = conn.execute("select api.refund('acme', %s, 'refund-1')", [paid[0][1]]).fetchone()[0]
    claim(conn, "test_ng")
    settle(conn, refund["id"], "succeeded")
    conn.execute("select sched.fold_rollups()")  # the scheduler's tick: report.revenue reads the rollup
    return db_url


def shown(value) -> str:
    """A value as the tables print it."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def assert_readable(output: str, expected: list) -> None:
    assert "…" not in output, output
    assert max(len(line) for line in output.splitlines()) <= 80, output
    words = set(output.split())
    for value in expected:
        if value is None or value == "":
            continue
        text = shown(value)
        if " " in text:
            assert text in output, (text, output)
        else:
            assert text in words, (text, output)  # a whole word: not cut, not folded onto two lines


def view_rows(conn, view: str) -> tuple[list[str], list[tuple]]:
    cur = conn.execute(f"select * from {view} order by 1, 2")
    return [c.name for c in cur.description], cur.fetchall()


def values_of(rows: list[tuple]) -> list:
    return [value for row in rows for value in row if not hasattr(value, "isoformat")]


def test_every_report_shows_every_number_and_name_whole_at_80_columns(business, conn):
    assert conn.execute("select collected_minor from report.carrier_summary where carrier = 'test_ng'"
                        ).fetchone()[0] == 2 * BIG_PRICE + 20000
    for args, views in [(("report",), ["success"]), (("report", "revenue"), ["revenue"]),
                        (("report", "carriers"), ["carriers"]), (("report", "all"), list(queries.REPORT_VIEWS))]:
        result = run(business, *args)
        assert result.returncode == 0, result.stderr
        expected = []
        for name in views:
            expected += values_of(view_rows(conn, queries.REPORT_VIEWS[name])[1])
        assert_readable(result.stdout, expected)
        for name in views:
            assert queries.REPORT_VIEWS[name] in result.stdout  # each view says which it is

    listed = run(business, "carrier", "list")
    assert listed.returncode == 0, listed.stderr
    assert_readable(listed.stdout, values_of(conn.execute(queries.LIST_CARRIERS).fetchall()))
    assert LONG_NAME in listed.stdout and LONG_CARRIER in listed.stdout

    for args, query, params in [(("merchant", "list"), queries.LIST_MERCHANTS, None),
                                (("product", "prices", "acme"), queries.LIST_PRICE_POINTS,
                                 {"merchant": "acme", "product": None}),
                                (("subscriber", "history", "+2348020000001"), queries.SUBSCRIBER_HISTORY,
                                 {"msisdn": "+2348020000001"})]:
        result = run(business, *args)
        assert result.returncode == 0, (args, result.stderr)
        assert_readable(result.stdout, values_of(conn.execute(query, params).fetchall()))


def test_csv_and_json_carry_every_column_and_row(business, conn):
    for name, view in [("carriers", "report.carrier_summary"), ("revenue", "report.revenue")]:
        columns, rows = view_rows(conn, view)
        as_csv = run(business, "report", name, "--format", "csv")
        assert as_csv.returncode == 0, as_csv.stderr
        parsed = list(csv.reader(io.StringIO(as_csv.stdout)))
        assert parsed[0] == columns
        assert parsed[1:] == [["" if v is None else str(v) for v in row] for row in rows]
        as_json = run(business, "report", name, "--format", "json")
        assert as_json.returncode == 0, as_json.stderr
        documents = json.loads(as_json.stdout)
        assert [list(document) for document in documents] == [columns] * len(rows)
        assert [[Decimal(str(v)) if isinstance(v, float) else v for v in d.values()] for d in documents] == \
            [list(row) for row in rows]

    everything = json.loads(run(business, "report", "all", "--format", "json").stdout)
    assert set(everything) == set(queries.REPORT_VIEWS)
    assert {row["carrier"] for row in everything["carriers"]} == {"test_gb", "test_ng", LONG_CARRIER}
    one_csv = run(business, "report", "all", "--format", "csv")
    assert one_csv.returncode == 1 and "one report at a time" in one_csv.stderr

    carriers = json.loads(run(business, "carrier", "list", "--format", "json").stdout)
    assert list(carriers[0]) == ["code", "name", "country", "currency", "tps", "regulation", "enabled", "queued",
                                 "unsettled"]
    assert {c["code"]: c["name"] for c in carriers}[LONG_CARRIER] == LONG_NAME
    prices = list(csv.reader(io.StringIO(run(business, "product", "prices", "acme", "--format", "csv").stdout)))
    assert str(BIG_PRICE) in {row[4] for row in prices[1:]}


def test_the_demo_report_tables_show_every_number_whole_at_80_columns(business, conn):
    cur = conn.execute(queries.DEMO_CARRIER_SUMMARY)
    columns = [c.name for c in cur.description]
    rows = [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
    exponents = dict(conn.execute(queries.CURRENCY_EXPONENTS, {"currencies": [r["currency"] for r in rows]}))
    for row in rows:
        row["currency_exponent"] = exponents[row["currency"]]
    summary = {"carriers": rows, "checks": {"journals_balanced": {"ok": True, "detail": "0 unbalanced journal(s)"}},
               "totals": {"subscribers": 6, "subscriptions": 0, "confirmed_optins": 0, "never_confirmed": 0,
                          "wrong_pins": 0, "purchases": 6, "refunds_requested": 1, "cancellations": 0,
                          "sms_delivered": 0, "webhooks": {}, "purchase_refusals": {}, "refund_refusals": {},
                          "subscribe_refusals": {}}}
    out = io.StringIO()
    print_report(Console(file=out, width=80, force_terminal=False, color_system=None), summary)
    text = out.getvalue()
    expected = []
    for row in rows:
        expected += [row["carrier"], row["country"], row["currency"], f"{row['charges_attempted']:,}",
                     f"{row['charges_collected']:,}", f"{row['success_pct'] or 0}%",
                     amount(row["collected_minor"], row["currency_exponent"]),
                     amount(row["refunded_minor"], row["currency_exponent"]),
                     amount(row["net_minor"], row["currency_exponent"]),
                     f"{row['refunds_succeeded']}/{row['refunds']}", f"{row['renewal_attempts']:,}",
                     f"{row['active']:,}", f"{row['cancelled']:,}", f"{row['pending_optin']:,}"]
    assert "9,681,234.56" in expected
    assert_readable(text, expected)


def test_one_record_reads_as_field_value_lines(business):
    shown_carrier = run(business, "carrier", "show", LONG_CARRIER)
    assert shown_carrier.returncode == 0, shown_carrier.stderr
    lines = shown_carrier.stdout.splitlines()
    assert any(re.fullmatch(r"\s*name: " + re.escape(LONG_NAME), line) for line in lines), lines
    assert any(re.fullmatch(r"\s*code: " + LONG_CARRIER, line) for line in lines), lines
    assert "…" not in shown_carrier.stdout


def _commands(group, path=()):
    yield path
    for name, sub in getattr(group, "commands", {}).items():
        yield from _commands(sub, (*path, name))


BOX = "│┃"


def awkward_breaks(text: str, width: int = 80) -> list[tuple[str, str]]:
    """Pairs of lines where the second continues the text of the first although its first word
    would have fitted on the first: a sentence broken by a newline in the source, not by wrapping."""
    found = []
    lines = text.split("\n")
    for above, below in zip(lines, lines[1:], strict=False):
        boxed = above.rstrip().endswith(tuple(BOX)) and below.rstrip().endswith(tuple(BOX))
        upper = above.rstrip()[:-1] if boxed else above
        lower = below.rstrip()[:-1] if boxed else below
        limit = len(upper) - 1 if boxed else width - 1
        text_below = lower.lstrip(BOX + " ")
        if not text_below or not above.strip():
            continue
        start = len(lower) - len(text_below)
        if boxed and (start <= 2 or re.search(r"\S {2,}\S", text_below)):
            continue  # a new row of a panel: its first cells are filled
        if start >= len(upper) or upper[start] == " " or upper[start - 1] not in " " + BOX:
            continue  # nothing above in the same column: a new cell or paragraph
        word = text_below.split()[0]
        if word.startswith("["):
            continue  # typer puts [default: …] and [env var: …] on a line of their own
        if len(upper.rstrip()) + 1 + len(word) <= limit:
            found.append((above, below))
    return found


def test_every_help_reads_at_80_columns():
    import typer

    from carrierpay.cli.main import app

    # The finder sees what it looks for: a sentence broken by a newline, in prose and in a panel.
    assert len(awkward_breaks(" Run carrierpay end to end: embedded PostgreSQL, four simulated carriers (GB, \n"
                              " ZA, NG, IN), two\n"
                              " merchants, thousands of subscribers.\n")) == 1
    panel = ("│ demo        Run carrierpay end to end: embedded PostgreSQL, four simulated   │\n"
             "│             carriers (GB, ZA, NG, IN), two                                   │\n"
             "│             merchants, thousands of subscribers, a simulated week of         │\n"
             "│ up          Run the adapters.                                                │\n")
    assert len(awkward_breaks(panel)) == 1

    root = typer.main.get_command(app)
    runner = CliRunner()
    paths = list(_commands(root))
    assert len(paths) > 40
    for path in paths:
        result = runner.invoke(root, [*path, "--help"], env={"COLUMNS": "80"}, prog_name="carrierpay")
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output
        assert "…" not in result.output, (path, result.output)
        assert awkward_breaks(result.output) == [], (path, awkward_breaks(result.output))
