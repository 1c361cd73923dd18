"""Every function and trigger in our schemas after migrate has exactly one source file under db/.

A catalog object that no file defines is a leftover (a retired name that 000_retired.sql does not
drop); one defined in two files has two owners that will drift apart.
"""

from __future__ import annotations

import re
from collections import defaultdict

import psycopg
import pytest

from carrierpay.paths import sql_root

SCHEMAS = ("cp", "api", "admin", "adapter", "report", "sched")
SOURCES = (("procedures", "*.sql"), ("triggers", "*.sql"), ("privileges", "*.sql"),
           ("migrations/versions", "*.py"))

FUNCTION = re.compile(r"\bcreate\s+(?:or\s+replace\s+)?(?:function|procedure|aggregate)\s+(\w+)\.(\w+)\s*\(",
                      re.IGNORECASE)
TRIGGER = re.compile(r"\bcreate\s+(?:or\s+replace\s+)?(?:constraint\s+)?trigger\s+(\w+)\s+"
                     r"(?:before|after|instead\s+of)\b.*?\bon\s+(\w+)\.(\w+)", re.IGNORECASE | re.DOTALL)


def source_definitions() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Function and trigger names (schema.name, schema.table.trigger) -> the files defining them."""
    root = sql_root()
    functions: dict[str, set[str]] = defaultdict(set)
    triggers: dict[str, set[str]] = defaultdict(set)
    for directory, pattern in SOURCES:
        for path in sorted((root / directory).glob(pattern)):
            name = f"{directory}/{path.name}"
            text = re.sub(r"--[^\n]*", "", path.read_text())  # a comment may name a statement it explains
            for schema, function in FUNCTION.findall(text):
                functions[f"{schema}.{function}".lower()].add(name)
            for trigger, schema, table in TRIGGER.findall(text):
                triggers[f"{schema}.{table}.{trigger}".lower()].add(name)
    return functions, triggers


def catalog_objects(url: str) -> tuple[set[str], set[str]]:
    with psycopg.connect(url) as conn:
        functions = {row[0] for row in conn.execute(
            """select n.nspname || '.' || p.proname from pg_catalog.pg_proc p
               join pg_catalog.pg_namespace n on n.oid = p.pronamespace
               where n.nspname = any(%s)
                 and not exists (select 1 from pg_catalog.pg_depend d  -- pgTAP, plpgsql_check
                                 where d.classid = 'pg_catalog.pg_proc'::regclass and d.objid = p.oid
                                   and d.deptype = 'e')""", (list(SCHEMAS),))}
        triggers = {row[0] for row in conn.execute(
            """select n.nspname || '.' || c.relname || '.' || t.tgname from pg_catalog.pg_trigger t
               join pg_catalog.pg_class c on c.oid = t.tgrelid
               join pg_catalog.pg_namespace n on n.oid = c.relnamespace
               where n.nspname = any(%s) and not t.tgisinternal""", (list(SCHEMAS),))}
    return functions, triggers


@pytest.mark.parametrize("kind", ["functions", "triggers"])
def test_every_function_and_trigger_is_defined_in_exactly_one_file(db_url, kind):
    which = ("functions", "triggers").index(kind)
    sources = source_definitions()[which]
    objects = catalog_objects(db_url)[which]
    assert objects, f"no {kind} found: is the database migrated?"
    nowhere = sorted(o for o in objects if o not in sources)
    twice = {o: sorted(sources[o]) for o in sorted(objects) if len(sources.get(o, ())) > 1}
    assert nowhere == [], f"{kind} in the database that no file under db/ defines: {nowhere}"
    assert twice == {}, f"{kind} defined in more than one file: {twice}"


def test_triggers_of_a_table_live_in_the_file_named_after_it():
    """The firing order of a table's triggers (their _NNN names) is read in one file."""
    _, sources = source_definitions()
    misplaced = {t: sorted(files) for t, files in sources.items()
                 if files != {f"triggers/{t.split('.')[1]}.sql"}}
    assert misplaced == {}, f"triggers outside db/triggers/<table>.sql: {misplaced}"


def test_repeatable_files_never_drop_a_trigger():
    """DROP TRIGGER locks its table against readers and writers, even when the trigger is gone."""
    root = sql_root()
    offenders = [f"{d}/{p.name}" for d in ("procedures", "triggers", "privileges")
                 for p in sorted((root / d).glob("*.sql"))
                 if re.search(r"\bdrop\s+trigger\b", re.sub(r"--[^\n]*", "", p.read_text()), re.IGNORECASE)]
    assert offenders == []
