"""The examples of docs/sql-api.md run as written, on a single node and through the front.

Every ```sql block of the document runs, in order, in one session holding the test world
(db/tests/fixtures/world.sql). A block whose info string says `error=CPnnn` must fail with exactly
that SQLSTATE (such blocks hold a single statement); every other block must succeed.

[node]: one psql session against a fresh migrated database. [front]: the same statements, with psql's
variables (`\\gset`, `:name`, `:'name'`), through a front over two partitions (`PsqlThroughFront`):
api.* calls go to the front, which routes each; the operator's and the adapter's statements
(admin.*, adapter.*, sched.*, a look at cp.*) run on every partition, as the partitions' own daemons
and `carrierpay shards admin` run them, and answer with the partition that holds what they name;
a session authorized as a merchant is a merchant's login on the front.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

from carrierpay.migrate import repeatable_files
from carrierpay.paths import sql_root
from carrierpay.shards.front import NOT_THROUGH_THE_FRONT

pytestmark = pytest.mark.sql_api

DOC = Path(__file__).resolve().parents[2] / "docs" / "sql-api.md"
WORLD_SQL = sql_root() / "tests" / "fixtures" / "world.sql"
BLOCK = re.compile(r"^```sql([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
EXPECTED_ERROR = re.compile(r"error=([0-9A-Z]{5})")
END = "DOCS-EXAMPLES-END"


def sql_blocks(text: str) -> list[tuple[str | None, str]]:
    """(expected SQLSTATE or None, code) for each ```sql block, in document order."""
    blocks = []
    for info, code in BLOCK.findall(text):
        expected = EXPECTED_ERROR.search(info)
        blocks.append((expected.group(1) if expected else None, code))
    return blocks


def psql_script(blocks: list[tuple[str | None, str]]) -> str:
    lines = ["\\set ON_ERROR_STOP 1", "\\set QUIET on", f"\\i {WORLD_SQL}", "\\set QUIET off"]
    for number, (expected, code) in enumerate(blocks, start=1):
        lines.append(f"\\echo 'DOCS-BLOCK {number}'")
        if expected is None:
            lines.append(code)
            continue
        lines += [
            "\\set ON_ERROR_STOP 0",
            code,
            "\\set ON_ERROR_STOP 1",
            f"select :'SQLSTATE' = '{expected}' as docs_ok \\gset",
            "\\if :docs_ok",
            "\\else",
            f"\\echo 'DOCS-FAIL block {number}: expected {expected}, got ' :'SQLSTATE'",
            "\\q",
            "\\endif",
        ]
    lines.append(f"\\echo '{END}'")
    return "\n".join(lines) + "\n"


def test_the_document_has_examples_of_every_api_function():
    text = DOC.read_text()
    code = "\n".join(code for _, code in sql_blocks(text))
    for function in ("api.charge", "api.request_optin", "api.confirm_optin", "api.subscribe",
                     "api.cancel_subscription", "api.refund", "api.check_balance", "api.payment(",
                     "api.subscription(", "adapter.claim_calls", "adapter.complete_calls", "adapter.record_callback",
                     "adapter.expire_leases", "adapter.claim_reconciliations", "admin.onboard_carrier",
                     "admin.add_merchant", "admin.add_product", "admin.add_price_point", "admin.set_carrier_enabled",
                     "admin.rotate_merchant_secret", "admin.upsert_regulation", "admin.set_clock",
                     "admin.advance_clock", "admin.settle_call", "sched.run_due", "sched.fold_hour_stats"):
        assert function in code, f"docs/sql-api.md has no example calling {function}"


def test_every_error_code_is_documented():
    text = DOC.read_text()
    raised = set()
    for path in [item.path for item in repeatable_files()]:
        raised |= set(re.findall(r"cp\.fail\('(CP\d{3})'", path.read_text()))
    table = set(re.findall(r"^\| `(CP\d{3})` \|", text, re.MULTILINE))
    assert raised - table == set(), f"error codes raised but missing from the table: {sorted(raised - table)}"


def test_the_examples_run_as_written(api_target, request):
    blocks = sql_blocks(DOC.read_text())
    assert len(blocks) > 20
    if api_target == "front":
        with PsqlThroughFront.connect(request.getfixturevalue("front_world")) as session:
            session.run(blocks)
        return
    db_url = request.getfixturevalue("db_url")
    proc = subprocess.run(
        ["psql", "-X", "-v", "VERBOSITY=terse", db_url],
        input=psql_script(blocks), capture_output=True, text=True, check=False, timeout=120,
    )
    last_block = re.findall(r"DOCS-BLOCK (\d+)", proc.stdout)
    where = f"failed in example block {last_block[-1] if last_block else '?'}"
    assert proc.returncode == 0, f"{where}: {proc.stderr.strip()[-2000:]}"
    assert "DOCS-FAIL" not in proc.stdout, [line for line in proc.stdout.splitlines() if "DOCS-FAIL" in line]
    assert END in proc.stdout, f"{where}: {proc.stderr.strip()[-2000:]}"


VARIABLE = re.compile(r"(?<!:):(?:'([A-Za-z_][A-Za-z0-9_]*)'|([A-Za-z_][A-Za-z0-9_]*))")
ANY_NUMBER = re.compile(r"\+\d{8,15}")
API_CALL = re.compile(r"\bapi\.([a-z_]+)\s*\(")


def statements(code: str, variables: dict[str, str]) -> Iterator[tuple[str, bool, list[str]]]:
    """psql's reading of a block, one statement at a time (a statement sees the variables those before it
    set): the statement with the variables it names substituted outside quotes and comments, as psql
    does; whether it ends in \\gset; the variables it names."""
    text: list[str] = []
    names: list[str] = []
    i = 0
    while i < len(code):
        char = code[i]
        if char in "'\"":
            end = i + 1
            while end < len(code) and not (code[end] == char and code[end + 1:end + 2] != char):
                end += 2 if code[end] == char else 1
            text.append(code[i:end + 1])
            i = end + 1
        elif code.startswith("--", i):
            i = code.find("\n", i) if "\n" in code[i:] else len(code)
        elif char == ":" and (match := VARIABLE.match(code, i)) and (i == 0 or code[i - 1] != ":") \
                and (match.group(1) or match.group(2)) in variables:
            name = match.group(1) or match.group(2)
            value = variables[name]
            text.append("'" + value.replace("'", "''") + "'" if match.group(1) else value)
            names.append(name)
            i = match.end()
        elif char == ";" or code.startswith("\\gset", i):
            i += 1 if char == ";" else len("\\gset")
            yield "".join(text).strip(), char != ";", names
            text, names = [], []
        elif char == "\\":
            raise AssertionError(f"psql meta-command not supported through the front: {code[i:i + 20]!r}")
        else:
            text.append(char)
            i += 1
    assert not "".join(text).strip(), f"a statement without its terminator: {''.join(text).strip()[:80]!r}"


@dataclass
class PsqlThroughFront:
    """The document's psql session, played through a front over partitions (the module docstring)."""

    world: object  # tests.front_kit.FrontWorld
    front: psycopg.Connection
    partitions: list[psycopg.Connection]
    variables: dict[str, str] = field(default_factory=dict)
    origin: dict[str, int] = field(default_factory=dict)  # variable -> the partition its value came from
    home: int = 0  # the partition the session is looking at
    as_merchant: bool = False

    @classmethod
    def connect(cls, world) -> PsqlThroughFront:
        return cls(world, psycopg.connect(world.api_front.front_url, autocommit=True),
                   [psycopg.connect(url, autocommit=True) for url in world.shard_urls])

    def __enter__(self) -> PsqlThroughFront:
        return self

    def __exit__(self, *exc) -> None:
        for conn in [self.front, *self.partitions]:
            conn.close()

    def run(self, blocks: list[tuple[str | None, str]]) -> None:
        for number, (expected, code) in enumerate(blocks, start=1):
            for sql, gset, names in statements(code, self.variables):
                try:
                    self.execute(sql, gset, names)
                except psycopg.Error as exc:
                    if expected is None:
                        raise AssertionError(f"example block {number}: {sql[:200]!r} failed: {exc}") from exc
                    assert exc.sqlstate == expected, f"example block {number}: expected {expected}, got {exc}"
                else:
                    assert expected is None, f"example block {number}: expected {expected}, nothing was raised"

    def partition_named(self, sql: str, names: list[str]) -> int | None:
        """The partition a statement is about: that of a variable it names, else of a number it names."""
        for name in names:
            if name in self.origin:
                return self.origin[name]
        numbers = ANY_NUMBER.findall(sql)
        return self.world.partition_of("", numbers[:1]) if numbers else None

    def execute(self, sql: str, gset: bool, names: list[str]) -> None:
        named = self.partition_named(sql, names)
        self.home = self.home if named is None else named
        lowered = sql.lower()
        if lowered.startswith(("set session authorization", "reset session authorization")):
            # A merchant's session is its login on the front; it reaches no partition.
            self.front.execute(sql)
            self.as_merchant = lowered.startswith("set")
            return
        calls = API_CALL.findall(sql)
        for name in calls:
            if name in NOT_THROUGH_THE_FRONT:
                pytest.skip(f"api.{name} is not routed through the front: it {NOT_THROUGH_THE_FRONT[name]}")
        if self.as_merchant or calls:
            answers = {self.home: self.front.execute(sql).pgresult}
        else:
            answers = self.everywhere(sql)
        if "admin.add_merchant" in sql:
            self.world.register_merchants()
        if gset:
            self.gset(answers)

    def everywhere(self, sql: str) -> dict[int, object]:
        """Run on every partition; the session's partition must succeed, the others may refuse (a call
        id or procedure id that is not theirs)."""
        answers = {}
        for partition, conn in enumerate(self.partitions):
            try:
                answers[partition] = conn.execute(sql).pgresult
            except psycopg.Error:
                if partition == self.home:
                    raise
        return answers

    def gset(self, answers: dict[int, object]) -> None:
        """psql's \\gset: one row, each column a variable (NULL unsets it), from the partition that
        answered it: the session's, unless only another partition has a row with a value."""
        def has_value(result) -> bool:
            return result.ntuples == 1 and any(result.get_value(0, c) is not None for c in range(result.nfields))

        holding = [partition for partition, result in answers.items() if has_value(result)]
        partition = self.home if self.home in holding or not holding else holding[0]
        result = answers[partition]
        assert result.ntuples == 1, f"\\gset wants one row, the partition {partition} answered {result.ntuples}"
        self.home = partition
        for column in range(result.nfields):
            name = result.fname(column).decode()
            value = result.get_value(0, column)
            if value is None:
                self.variables.pop(name, None)
                self.origin.pop(name, None)
            else:
                self.variables[name] = value.decode()
                self.origin[name] = partition
