"""The statement triggers that pair a statement's old rows with its new rows do it in linear time at any size.

PL/pgSQL keeps a static statement's plan from its first run in the session. When that first run was a
one-row update, a join of the transition tables planned for one row nests one scan inside the other:
quadratic over the next batch of thousands. The triggers pair the rows without a nested loop
(docs/architecture.md, "State machines"); auto_explain shows the plans they get (no timings: a
transition table scanned more than once is the quadratic plan).
"""

from __future__ import annotations

import re

import pytest

from tests.core.test_scheduling import add_due_subscriptions, run_due
from tests.core.world import load_world

BATCH = 2000

# Each table's key, and a no-op change to its rows: only the statement triggers (after update) have work.
TOUCH = {
    "cp.subscription": ("subscription_id", "attempts_today = attempts_today"),
    "cp.procedure": ("procedure_id", "metadata = metadata"),
    "cp.carrier_call": ("call_id", "lease_no = lease_no"),
}


def trigger_plans(conn, sql: str) -> list[str]:
    """The plans of every statement the triggers of `sql` run, as auto_explain reports them."""
    plans: list[str] = []

    def keep(diag) -> None:
        plans.append(diag.message_primary or "")

    conn.add_notice_handler(keep)
    try:
        conn.execute(sql)
    finally:
        conn.remove_notice_handler(keep)
    return [p for p in plans if "Named Tuplestore Scan" in p]


@pytest.mark.parametrize("table", sorted(TOUCH))
def test_a_batch_after_a_one_row_statement_scans_each_transition_table_once(conn, table):
    load_world(conn)
    add_due_subscriptions(conn, BATCH)
    run_due(conn, limit=BATCH)  # a pending charge and its queued call for each
    assert conn.execute(f"select count(*) >= %s from {table}", [BATCH]).fetchone()[0]

    key, touch = TOUCH[table]
    # The session's first statement on the table changes one row: what a static plan would keep.
    conn.execute(f"update {table} set {touch} where {key} = (select min({key}) from {table})")

    conn.execute("load 'auto_explain'")
    for setting, value in {"log_min_duration": "0", "log_nested_statements": "on", "log_analyze": "on",
                           "log_timing": "off", "log_level": "notice"}.items():
        conn.execute(f"set auto_explain.{setting} = {value}")
    conn.execute("set client_min_messages = notice")
    plans = trigger_plans(conn, f"update {table} set {touch}")

    assert plans, "no trigger of the statement read its transition tables"
    scans = [int(loops) for plan in plans
             for loops in re.findall(r"Named Tuplestore Scan.*?loops=(\d+)\)", plan)]
    assert scans and max(scans) == 1, [p for p in plans if re.search(r"Tuplestore Scan.*loops=(?!1\))", p)]
