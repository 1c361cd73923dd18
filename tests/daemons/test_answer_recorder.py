"""The adapter's answer recorder against a real database: a group whose commit was cut off (the
connection died after the commit, so the adapter cannot tell whether it happened) is sent again
after reconnecting, and each answer is recorded once."""

from __future__ import annotations

import asyncio

import psycopg

from carrierpay.adapters import daemon
from carrierpay.adapters.daemon import AnswerRecorder
from tests.core.world import load_world


async def test_a_group_whose_commit_was_cut_off_is_sent_again_and_recorded_once(db_url, monkeypatch):
    with psycopg.connect(db_url, autocommit=True) as conn:
        load_world(conn)
        paid = conn.execute("select api.charge('acme', '+2348020000001', 'gems', 'k1')").fetchone()[0]["id"]
        held = conn.execute("select api.charge('acme', '+2348020000002', 'gems', 'k2')").fetchone()[0]["id"]
        calls = {row[0]["procedure_id"]: row[0] for row in
                 conn.execute("select adapter.claim_calls('test_ng', 10, interval '1 minute', 'w')").fetchall()}
    answers = [
        {"call_id": calls[paid]["call_id"], "lease": calls[paid]["lease"], "outcome": "succeeded",
         "carrier_ref": "NG-1"},
        {"call_id": calls[held]["call_id"], "lease": calls[held]["lease"], "outcome": "failed",
         "reason": "throttled", "retry_after_s": 30},
    ]

    recorded = daemon.complete_results
    sent: list[dict] = []

    async def commit_then_lose_the_connection(conn, results):
        summary = await recorded(conn, results)
        sent.append(summary)
        if len(sent) == 1:
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return summary

    monkeypatch.setattr(daemon, "complete_results", commit_then_lose_the_connection)
    recorder = AnswerRecorder(db_url, calling=lambda: 0)
    running = asyncio.ensure_future(recorder.run())
    for answer in answers:
        recorder.put(answer)
    recorder.close()
    await asyncio.wait_for(running, 30)

    assert sent == [{"applied": 2}, {"duplicate": 2}], "sent again after the lost connection, a repeat"
    assert recorder.recorded == 2 and recorder.held == 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute("select status::text, collected_minor from cp.procedure where procedure_id = %s",
                            [paid]).fetchone() == ("succeeded", 20000)
        assert conn.execute("select count(*) from cp.journal where procedure_id = %s", [paid]).fetchone()[0] == 1
        # The throttled call is back on the queue, waiting its turn; the repeat did not take it off.
        assert conn.execute("select c.status::text, q.lease_until is null from cp.carrier_call c "
                            "join cp.call_queue q using (call_id) where c.procedure_id = %s",
                            [held]).fetchone() == ("queued", True)
        logged = conn.execute("select count(*) from cp.carrier_log where procedure_id = any(%s)",
                              [[paid, held]]).fetchone()[0]
        assert logged == 2, "each answer logged once"
