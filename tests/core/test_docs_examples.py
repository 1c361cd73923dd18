"""The examples of docs/sql-api.md run as written.

Every ```sql block of the document runs, in order, in one psql session against a fresh migrated
database holding the test world (db/tests/fixtures/world.sql). A block whose info string says
`error=CPnnn` must fail with exactly that SQLSTATE (such blocks hold a single statement); every
other block must succeed.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from carrierpay.migrate import repeatable_files
from carrierpay.paths import sql_root

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


def test_the_examples_run_as_written(db_url):
    blocks = sql_blocks(DOC.read_text())
    assert len(blocks) > 20
    proc = subprocess.run(
        ["psql", "-X", "-v", "VERBOSITY=terse", db_url],
        input=psql_script(blocks), capture_output=True, text=True, check=False, timeout=120,
    )
    last_block = re.findall(r"DOCS-BLOCK (\d+)", proc.stdout)
    where = f"failed in example block {last_block[-1] if last_block else '?'}"
    assert proc.returncode == 0, f"{where}: {proc.stderr.strip()[-2000:]}"
    assert "DOCS-FAIL" not in proc.stdout, [line for line in proc.stdout.splitlines() if "DOCS-FAIL" in line]
    assert END in proc.stdout, f"{where}: {proc.stderr.strip()[-2000:]}"
