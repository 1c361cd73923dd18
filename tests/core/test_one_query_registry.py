"""The Python side holds no copy of a rule and runs no SQL of its own: every statement the product's
code sends is a named query in carrierpay/queries.py (one registry), the demo formats money with
the currency exponent the database defines, and it reads the regulation instead of restating it."""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path

import psycopg

import carrierpay
from carrierpay import demo, queries

PACKAGE = Path(carrierpay.__file__).parent

# Modules that talk SQL without being users of the product's SQL API, so their statements stay with
# them: the migration runner (its own bookkeeping tables), the embedded cluster (extensions of a
# fresh database), the history store (a separate database whose schema that module owns), the
# carrier simulators (stand-ins for carriers), the benchmarks (they build and measure populations
# from outside) and the sharded deployment's builder and coordinator (the front database's schema,
# and two-phase commits across databases). Everything else goes through carrierpay/queries.py.
OWN_SQL = {
    "queries.py",
    "migrate.py",
    "embedded.py",
    "history/stores.py",
}
OWN_SQL_FOLDERS = ("simulators/", "benchmarks/", "shards/")

STATEMENT = re.compile(
    r"^\s*(select\s|insert\s+into\s|update\s+\w+\.\w+\s|delete\s+from\s|with\s+\w+\s+as\s*\(|"
    r"create\s+(or\s+replace\s+)?function\s|listen\s|notify\s)",
    re.IGNORECASE,
)


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _statements(path: Path) -> list[tuple[int, str]]:
    """String literals (f-string pieces included) of a module that begin like an SQL statement."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            if STATEMENT.search(node.value):
                found.append((node.lineno, node.value.strip().splitlines()[0][:60]))
    return found


def test_sql_statements_live_only_in_queries_py():
    strays = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative in OWN_SQL or relative.startswith(OWN_SQL_FOLDERS):
            continue
        strays += [f"{relative}:{line}: {text}" for line, text in _statements(path)]
    assert strays == [], "SQL outside carrierpay/queries.py:\n" + "\n".join(strays)


def test_the_check_sees_sql_in_a_module():
    """The scan itself finds what it is for: the registry is full of statements."""
    assert len(_statements(PACKAGE / "queries.py")) > 50


def test_one_registry_no_module_keeps_its_own():
    """No module keeps a dict or constant of SQL beside queries.py (the shipper and reconciler did)."""
    from carrierpay.adapters import reconciler
    from carrierpay.history import shipper

    assert not hasattr(shipper, "QUERIES")
    assert not hasattr(reconciler, "ALL_CARRIERS")
    for name in ("TRY_FUNCTIONS", "BUSY_SQL", "OPEN_CALLS_SQL", "RECEIVABLE_SQL", "COLLECTED_SQL",
                 "OPEN_PROCEDURES_SQL", "NOTIFICATIONS_SQL", "HISTORY_LAG_SQL"):
        assert not hasattr(demo, name), name


def test_demo_amounts_use_the_exponent_of_the_currency(db_url):
    """UGX has no minor unit and KWD three decimals: dividing by 100 printed both wrong."""

    async def exponents() -> dict[str, int]:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            return await demo.currency_exponents(conn, ["UGX", "KWD", "GBP", "UGX"])

    found = asyncio.run(exponents())
    assert found == {"UGX": 0, "KWD": 3, "GBP": 2}
    assert demo.amount(50000, found["UGX"]) == "50,000"
    assert demo.amount(1250, found["KWD"]) == "1.250"
    assert demo.amount(123456, found["GBP"]) == "1,234.56"
    assert demo.money(-1250, "KWD", found["KWD"]) == "-1.250 KWD"


def test_demo_report_prints_major_units_per_currency(capsys):
    from rich.console import Console

    row = {"carrier": "x_ug", "country": "UG", "currency": "UGX", "currency_exponent": 0,
           "charges_attempted": 1, "charges_collected": 1, "success_pct": 100, "refunds": 0,
           "refunds_succeeded": 0, "collected_minor": 50000, "refunded_minor": 0, "net_minor": 50000,
           "renewal_attempts": 0, "renewal_success_pct": None, "retries_per_success": None, "step_downs": 0,
           "active": 0, "in_retry_or_grace": 0, "suspended": 0, "cancelled": 0, "pending_optin": 0}
    totals = {"subscribers": 1, "subscriptions": 0, "confirmed_optins": 0, "never_confirmed": 0, "wrong_pins": 0,
              "purchases": 1, "refunds_requested": 0, "cancellations": 0, "sms_delivered": 0, "webhooks": {},
              "purchase_refusals": {}, "refund_refusals": {}, "subscribe_refusals": {}}
    console = Console(width=200, force_terminal=False)
    demo.print_report(console, {"carriers": [row], "totals": totals, "checks": {}})
    out = capsys.readouterr().out
    assert "50,000" in out
    assert "500.00" not in out


def test_demo_reads_which_carriers_want_an_optin_per_purchase(conn):
    """The demo asks the regulation (cp.effective_rules) which carriers need a PIN before a purchase."""
    from tests.core.world import load_world

    load_world(conn)

    def needing() -> set[str]:
        return {code for (code,) in conn.execute(queries.DEMO_ONE_TIME_OPTIN_CARRIERS).fetchall()}

    before = needing()
    assert "test_gb" in before  # GB's preset says so
    assert "test_ng" not in before
    conn.execute("update cp.carrier set rules_override = rules_override || '{\"optin_one_time\": true}' "
                 "where code = 'test_ng'")
    assert needing() == before | {"test_ng"}
