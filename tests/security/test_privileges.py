"""The privilege inventory: after a migrate, each role executes and reads exactly what docs/security.md says."""

from __future__ import annotations

import fnmatch
import re
import uuid
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
OUR_SCHEMAS = ("cp", "api", "admin", "adapter", "report", "sched", "gateway")


def documented_inventory() -> dict[str, tuple[list[str], list[str]]]:
    """role -> (function patterns it may execute, relation patterns it may read), from the doc's table."""
    section = DOC.read_text().split("## Roles and what each may execute", 1)[1].split("\n## ", 1)[0]
    inventory = {}
    for role, execute, read in re.findall(r"^\| `([a-z_]+|PUBLIC)` \| ([^|]*) \| ([^|]*) \|", section, re.MULTILINE):
        def patterns(cell: str) -> list[str]:
            return re.findall(r"`([a-z_.*]+)`", cell)

        inventory[role] = (patterns(execute), patterns(read))
    return inventory


def test_the_doc_lists_every_role():
    assert set(documented_inventory()) == {"carrierpay_merchant", "carrierpay_adapter", "carrierpay_reporter",
                                           "carrierpay_admin", "carrierpay_front", "carrierpay_gateway",
                                           "PUBLIC"}


@pytest.fixture
def nobody(conn):
    """A login with no memberships at all: what PUBLIC may do, it may do."""
    role = f"nobody_{uuid.uuid4().hex[:8]}"
    conn.execute(f"create role {role}")
    yield role
    conn.execute(f"drop owned by {role}")
    conn.execute(f"drop role {role}")


def test_each_role_executes_exactly_its_documented_functions(conn, nobody):
    functions = [row[0] for row in conn.execute(
        """
        select n.nspname || '.' || p.proname || '(' || pg_catalog.oidvectortypes(p.proargtypes) || ')'
        from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
        where n.nspname = any(%s) and p.prokind in ('f', 'p')
        """, [list(OUR_SCHEMAS)]).fetchall()]
    assert len(functions) > 100
    wrong = []
    for role, (patterns, _) in documented_inventory().items():
        db_role = nobody if role == "PUBLIC" else role
        for function in functions:
            name = function.split("(", 1)[0]
            expected = any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
            actual = conn.execute("select pg_catalog.has_function_privilege(%s, %s, 'EXECUTE')",
                                  [db_role, function]).fetchone()[0]
            if actual != expected:
                wrong.append(f"{role} {'may' if actual else 'may not'} execute {function}")
    assert wrong == []


def test_each_role_reads_exactly_its_documented_relations(conn, nobody):
    relations = [row[0] for row in conn.execute(
        """
        select n.nspname || '.' || c.relname
        from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
        where n.nspname = any(%s) and c.relkind in ('r', 'v', 'm', 'p')
        """, [list(OUR_SCHEMAS)]).fetchall()]
    wrong = []
    for role, (_, patterns) in documented_inventory().items():
        db_role = nobody if role == "PUBLIC" else role
        for relation in relations:
            expected = any(fnmatch.fnmatchcase(relation, pattern) for pattern in patterns)
            for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE"):
                actual = conn.execute("select pg_catalog.has_table_privilege(%s, %s, %s)",
                                      [db_role, relation, privilege]).fetchone()[0]
                if actual != (expected and privilege == "SELECT"):
                    wrong.append(f"{role} {'has' if actual else 'lacks'} {privilege} on {relation}")
    assert wrong == []


def test_nobody_but_the_operators_may_create_temporary_tables(conn, nobody):
    database = conn.execute("select current_database()").fetchone()[0]
    for role, allowed in (("carrierpay_merchant", False), ("carrierpay_adapter", False),
                          ("carrierpay_reporter", False), ("carrierpay_gateway", False), (nobody, False),
                          ("carrierpay_admin", True)):
        actual = conn.execute("select pg_catalog.has_database_privilege(%s, %s, 'TEMPORARY')",
                              [role, database]).fetchone()[0]
        assert actual == allowed, role
