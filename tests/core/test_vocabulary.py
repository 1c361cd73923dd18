"""The rule keys and failure reasons have one source: the tables migrate fills (cp.rule_key,
cp.failure_reason), the Python side that reads the same file, the spec schemas built from it and the
tables in docs/sql-api.md all say the same thing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from carrierpay import vocabulary
from carrierpay.adapters.reconciler import NOT_DEFINITE
from carrierpay.adapters.smpp.config import SmppConfigError, validate_smpp_section
from carrierpay.adapters.spec import validate_spec

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "sql-api.md"
CARRIERS = ROOT / "carriers"
REASON_FLAGS = ("permanent", "definite", "nothing_sent", "steps_down", "in_result_map", "in_smpp_map")


def rule_key_rows(conn) -> list[str]:
    rows = conn.execute("select key, type, default_value, doc from cp.rule_key order by key").fetchall()
    return [f"| `{key}` | {type_} | {'' if default is None else '`' + json.dumps(default) + '`'} | {doc} |"
            for key, type_, default, doc in rows]


def failure_reason_rows(conn) -> list[str]:
    rows = conn.execute(f"select reason, {', '.join(REASON_FLAGS)}, doc from cp.failure_reason "
                        "order by definite desc, reason").fetchall()
    return [f"| `{row[0]}` | " + " | ".join("yes" if flag else "" for flag in row[1:-1]) + f" | {row[-1]} |"
            for row in rows]


def doc_table(heading: str) -> list[str]:
    """The body rows of the first table under a heading of docs/sql-api.md."""
    section = DOC.read_text().split(f"### {heading}\n", 1)[1].split("\n#", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return lines[2:]


def test_the_docs_list_the_rule_keys_as_the_table_holds_them(conn):
    assert doc_table("Regulation rule keys") == rule_key_rows(conn)


def test_the_docs_list_the_failure_reasons_as_the_table_holds_them(conn):
    assert doc_table("Failure reasons") == failure_reason_rows(conn)


def test_python_reads_the_vocabularies_the_database_holds(conn):
    in_db = conn.execute("select key, type, default_value, doc from cp.rule_key order by key").fetchall()
    assert sorted((k.key, k.type, k.default, k.doc) for k in vocabulary.rule_keys()) == in_db
    in_db = conn.execute(f"select reason, {', '.join(REASON_FLAGS)}, doc from cp.failure_reason "
                         "order by reason").fetchall()
    in_python = sorted((r.reason, *(getattr(r, f) for f in REASON_FLAGS), r.doc) for r in vocabulary.failure_reasons())
    assert in_python == in_db
    assert NOT_DEFINITE == {row[0] for row in conn.execute("select reason from cp.failure_reason where not definite")}


def shipped(code: str) -> dict:
    return yaml.safe_load((CARRIERS / code / "carrier.yaml").read_text())


def test_a_spec_is_checked_against_the_vocabularies():
    assert validate_spec(shipped("aggregator_ng")) == []
    assert validate_spec({**shipped("aggregator_ng"),
                          "rules": {"optin_one_time": True, "charging_hours": "08:00-20:00"}}) == []
    problems = validate_spec({**shipped("aggregator_ng"), "rules": {"monthly_confirmation_minor": 20000}})
    assert problems and all(p.startswith("rules") for p in problems), problems
    assert validate_spec({**shipped("aggregator_ng"), "rules": {"grace_days": "3"}})
    odd_reason = shipped("aggregator_ng")
    odd_reason["results"][0]["reason"] = "no_money"
    problems = validate_spec(odd_reason)
    assert any("no_money" in p for p in problems), problems


def test_an_smpp_status_map_names_only_smpp_reasons():
    section = shipped("smsc_za")["smpp"]
    validate_smpp_section({**section, "command_status_map": {"0x00000045": "insufficient_funds"}})
    with pytest.raises(SmppConfigError):
        validate_smpp_section({**section, "command_status_map": {"0x00000045": "consent_refused"}})
