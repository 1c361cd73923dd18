"""What a merchant's own database role can send the API, and what comes back: metadata that is not a small
JSON object, values of the wrong type inside it, unbounded reasons, oversized arguments quoted back in
error messages, a balance check without an idempotency key. Each is refused with CP080 (or its own code)
and leaves nothing behind; no message carries more than a short prefix of the input or a whole phone
number. The daemons' log lines mask phone numbers too."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

pytestmark = pytest.mark.sql_api
ROOT = Path(__file__).resolve().parents[2]
NG = "+2348020000070"
GB = "+447700900070"


def refusal(conn, sql: str, params=()) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(sql, params)
    return raised.value


def nothing_written(owner) -> None:
    assert owner.execute("select count(*) from cp.procedure").fetchone()[0] == 0
    assert owner.execute("select count(*) from cp.idempotency").fetchone()[0] == 0


@pytest.mark.parametrize("metadata", [[1, 2], "a string", 42, {"note": "x" * 4100}],
                         ids=["array", "string", "number", "over-4kb"])
def test_metadata_must_be_a_small_json_object(owner, merchant, metadata):
    error = refusal(merchant, "select api.charge('acme', %s, 'gems', 'meta', null, %s)", [NG, Jsonb(metadata)])
    assert error.sqlstate == "CP080", error
    nothing_written(owner)


def test_metadata_is_kept_up_to_4096_bytes_serialized(owner, merchant):
    metadata = {"note": "x" * 4084}  # {"note": "…"}: 4096 bytes as the database writes it
    doc = merchant.execute("select api.charge('acme', %s, 'gems', 'meta-4096', null, %s)",
                           [NG, Jsonb(metadata)]).fetchone()[0]
    assert owner.execute("select metadata from cp.procedure where procedure_id = %s", [doc["id"]]).fetchone()[0] \
        == metadata
    error = refusal(merchant, "select api.charge('acme', %s, 'gems', 'meta-4097', null, %s)",
                    [NG, Jsonb({"note": "x" * 4085})])
    assert error.sqlstate == "CP080"


@pytest.mark.parametrize("number", [NG, GB], ids=["opt-in not required", "opt-in required"])
@pytest.mark.parametrize("optin_id", ["abc", 1e30, "99999999999999999999", 1.5, [1], {"id": 1}])
def test_an_optin_id_that_is_not_an_integer_is_an_invalid_argument(owner, merchant, number, optin_id):
    error = refusal(merchant, "select api.charge('acme', %s, 'gems', 'bad-optin', null, %s)",
                    [number, Jsonb({"optin_id": optin_id})])
    assert error.sqlstate == "CP080", error
    nothing_written(owner)


def test_reasons_are_bounded(owner, merchant):
    sub = merchant.execute("select api.subscribe('acme', %s, 'club', 'daily', 'sub')", [NG]).fetchone()[0]
    error = refusal(merchant, "select api.cancel_subscription('acme', %s, %s)", [sub["id"], "r" * 501])
    assert error.sqlstate == "CP080"
    assert owner.execute("select status::text from cp.subscription").fetchone()[0] == "pending_optin"
    error = refusal(merchant, "select api.refund('acme', 1, 'refund', null, %s)", ["r" * 501])
    assert error.sqlstate == "CP080"
    done = merchant.execute("select api.cancel_subscription('acme', %s, %s)", [sub["id"], "r" * 500]).fetchone()[0]
    assert done["cancel_reason"] == "r" * 500


@pytest.mark.parametrize("call, sqlstate", [
    ("select api.charge('acme', %(big)s, 'gems', 'echo-1')", "CP005"),
    ("select api.charge('acme', %(ng)s, %(big)s, 'echo-2')", "CP003"),
    ("select api.subscribe('acme', %(ng)s, 'club', %(big)s, 'echo-3')", "CP052"),
    ("select api.request_optin('acme', %(ng)s, %(big)s, 'echo-4')", "CP003"),
])
def test_error_messages_quote_only_a_short_prefix_of_the_input(owner, merchant, call, sqlstate):
    big = "A" * 10_000
    error = refusal(merchant, call, {"big": big, "ng": NG})
    assert error.sqlstate == sqlstate, error
    message = error.diag.message_primary
    assert "A" * 65 not in message and len(message) < 200, message
    nothing_written(owner)


def test_an_idempotency_conflict_quotes_a_short_prefix_of_the_key(merchant):
    key = "k" * 200
    merchant.execute("select api.charge('acme', %s, 'gems', %s)", [NG, key])
    error = refusal(merchant, "select api.charge('acme', %s, 'gems', %s, 20000, '{\"x\": 1}')", [NG, key])
    assert error.sqlstate == "CP010"
    assert "k" * 65 not in error.diag.message_primary


@pytest.mark.parametrize("number, sqlstate", [("+999 0000 000 4321", "CP004"), ("+4477009x04321", "CP005")])
def test_a_refused_number_is_masked_in_the_message(merchant, number, sqlstate):
    error = refusal(merchant, "select api.charge('acme', %s, 'gems', 'masked')", [number])
    assert error.sqlstate == sqlstate
    message = error.diag.message_primary
    digits = "".join(ch for ch in number if ch.isdigit())
    assert digits not in "".join(ch for ch in message if ch.isdigit()), message
    assert "4321" in message


def test_a_balance_check_takes_an_idempotency_key(owner, merchant):
    error = refusal(merchant, "select api.check_balance('acme', %s, 100::bigint)", [NG])
    assert error.sqlstate == "42883"  # the signature without a key is gone
    error = refusal(merchant, "select api.check_balance('acme', %s, 100, null)", [NG])
    assert error.sqlstate == "CP080"
    nothing_written(owner)
    first = merchant.execute("select api.check_balance('acme', %s, 100, 'balance-1')", [NG]).fetchone()[0]
    again = merchant.execute("select api.check_balance('acme', %s, 100, 'balance-1')", [NG]).fetchone()[0]
    assert again == first
    assert owner.execute("select count(*) from cp.carrier_call where operation = 'balance'").fetchone()[0] == 1
    error = refusal(merchant, "select api.check_balance('acme', %s, 200, 'balance-1')", [NG])
    assert error.sqlstate == "CP010"


def test_daemon_log_lines_mask_phone_numbers():
    """An adapter daemon's connector fails with the subscriber's number in its exception: the traceback in the
    daemon's log keeps only the last four digits."""
    script = textwrap.dedent("""
        import asyncio
        from carrierpay.adapters.daemon import call_safely
        from carrierpay.cli.daemons import _logging

        class Failing:
            async def execute(self, call):
                raise RuntimeError(f"carrier refused tel:{call['msisdn']} (sent as 447700900123)")

        _logging(False)
        asyncio.run(call_safely(Failing(), {"call_id": 7, "msisdn": "+447700900123"}))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    assert "connector failed on call 7" in run.stderr and "RuntimeError" in run.stderr
    assert "447700900123" not in run.stderr and "7700900" not in run.stderr, run.stderr
    assert "***0123" in run.stderr


def test_the_smpp_connector_does_not_put_a_number_in_its_errors():
    from carrierpay.adapters.smpp import SmppConnector

    section = {"host": "127.0.0.1", "port": 2775, "system_id": "carrierpay", "password_secret": "SMSC_PASSWORD",
               "source_short_codes": ["33001"]}
    connector = SmppConnector(section, {"SMSC_PASSWORD": "s3cret"})
    with pytest.raises(ValueError) as raised:
        connector._build({"call_id": 1, "operation": "send_sms", "correlator": "cp-1", "text": "hi",
                          "msisdn": "+27 82 000 0x0123"})
    assert "0x0123" not in str(raised.value) and "27" not in str(raised.value), raised.value
