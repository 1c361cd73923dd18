"""plpgsql_check over every PL/pgSQL function in carrierpay's schemas: zero errors allowed."""

from __future__ import annotations

PROJECT_SCHEMAS = ("cp", "api", "admin", "adapter", "report", "sched", "ledger")

CHECK_ALL = """
with targets as (
    select p.oid as fn,
           p.oid::regprocedure::text as name,
           coalesce(
               (select t.tgrelid from pg_trigger t where t.tgfoid = p.oid and not t.tgisinternal limit 1),
               0
           )::regclass as relid,
           (select t.tgoldtable from pg_trigger t where t.tgfoid = p.oid limit 1) as oldtable,
           (select t.tgnewtable from pg_trigger t where t.tgfoid = p.oid limit 1) as newtable,
           p.prorettype = 'trigger'::regtype as is_trigger
    from pg_proc p
    join pg_namespace n on n.oid = p.pronamespace
    join pg_language l on l.oid = p.prolang
    where l.lanname = 'plpgsql' and n.nspname = any(%s)
)
select t.name, c.lineno, c.statement, c.message, c.detail
from targets t
cross join lateral plpgsql_check_function_tb(t.fn, t.relid, fatal_errors => false,
                                           oldtable => t.oldtable, newtable => t.newtable) c
where c.level = 'error' and not (t.is_trigger and t.relid = 0)
"""

UNATTACHED_TRIGGERS = """
select p.oid::regprocedure::text
from pg_proc p join pg_namespace n on n.oid = p.pronamespace
where p.prorettype = 'trigger'::regtype and n.nspname = any(%s)
  and not exists (select 1 from pg_trigger t where t.tgfoid = p.oid)
"""


def test_plpgsql_check_finds_no_errors(conn):
    errors = conn.execute(CHECK_ALL, [list(PROJECT_SCHEMAS)]).fetchall()
    report = [f"{name}:{line} {stmt}: {msg} {detail or ''}" for name, line, stmt, msg, detail in errors]
    assert errors == [], "\n".join(report)


def test_every_trigger_function_is_attached(conn):
    # A trigger function plpgsql_check cannot see (no table) would escape the check above.
    assert conn.execute(UNATTACHED_TRIGGERS, [list(PROJECT_SCHEMAS)]).fetchall() == []


def test_check_would_catch_a_broken_function(conn):
    conn.execute(
        "create function cp.broken_on_purpose() returns int language plpgsql as "
        "$$ begin return (select no_such_column from cp.clock_offset); end $$"
    )
    errors = conn.execute(CHECK_ALL, [list(PROJECT_SCHEMAS)]).fetchall()
    assert any("broken_on_purpose" in row[0] for row in errors)
