"""Property test: random interleavings of charges, carrier outcomes, callbacks and refunds.

Each example drives the SQL API and the adapter functions in a random order and, after every
step, checks the database against a small Python model of the same rules:

- every journal balances;
- per payment, each ledger account holds what the split (cp.split_amount semantics) and the
  proportional refund reversals say, so the merchant payable is the net of collected minus refunded;
- no payment has two successful charge calls, nor two charge journals;
- refunded never exceeds collected, and statuses follow the model.

All examples share one database (the `db_url` fixture); each uses fresh subscriber numbers and
idempotency keys and checks only the payments it made, plus the global invariants.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from fractions import Fraction

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from .world import load_world

VAT_BP = {"NG": 750}
CARRIER_SHARE_BP = {"test_ng": 4000}
MERCHANTS = {  # code: (product, platform fee bp, one-time amounts on test_ng)
    "acme": ("gems", 1000, (20000, 12345, 999)),
    "other": ("coins", 0, (20000, 777)),
}
ACCOUNTS = ("carrier_receivable", "tax_payable", "carrier_share", "platform_revenue", "merchant_payable")
FINAL = ("done", "failed")


def pg_round(value: Fraction) -> int:
    """PostgreSQL's round(numeric): half away from zero."""
    sign = -1 if value < 0 else 1
    magnitude = abs(value)
    whole = int(magnitude)
    return sign * (whole + (1 if magnitude - whole >= Fraction(1, 2) else 0))


def split(gross: int, vat_bp: int, share_bp: int, fee_bp: int) -> dict[str, int]:
    """The charge journal in the model: debit the carrier, credit tax, carrier, platform, merchant."""
    tax = pg_round(Fraction(gross * vat_bp, 10000 + vat_bp))
    net = gross - tax
    share = pg_round(Fraction(net * share_bp, 10000))
    fee = pg_round(Fraction((net - share) * fee_bp, 10000))
    return {"carrier_receivable": gross, "tax_payable": -tax, "carrier_share": -share,
            "platform_revenue": -fee, "merchant_payable": -(net - share - fee)}


@dataclass
class Call:
    call_id: int
    correlator: str
    attempt: int
    status: str = "queued"


@dataclass
class Proc:
    """A charge or a refund as the model sees it."""

    proc_id: int
    kind: str
    amount: int
    merchant: str
    status: str = "pending"
    calls: list[Call] = field(default_factory=list)
    collected: int = 0
    refunded: int = 0
    parent: Proc | None = None
    refunds: list[Proc] = field(default_factory=list)
    booked: dict[str, int] = field(default_factory=dict)  # ledger, per account kind (charges only)


class Model:
    def __init__(self, conn: psycopg.Connection, serial: int):
        self.conn = conn
        self.serial = serial
        self.keys = itertools.count()
        self.charges: list[Proc] = []
        self.refunds: list[Proc] = []
        self.calls: dict[int, tuple[Proc, Call]] = {}

    # -- talking to the database ------------------------------------------------------------

    def sql(self, query: str, *params):
        return self.conn.execute(query, params).fetchall()

    def key(self) -> str:
        return f"p{self.serial}-{next(self.keys)}"

    def refresh_calls(self, proc: Proc) -> None:
        """Learn about calls the database created for a procedure (first call, transient retries)."""
        known = {c.call_id for c in proc.calls}
        for call_id, correlator, attempt in self.sql(
            "select call_id, correlator, attempt from cp.carrier_call where procedure_id = %s order by call_id",
            proc.proc_id,
        ):
            if call_id not in known:
                call = Call(call_id, correlator, attempt)
                proc.calls.append(call)
                self.calls[call_id] = (proc, call)

    # -- actions ------------------------------------------------------------------------------

    def charge(self, merchant: str, subscriber: int, amount_index: int) -> None:
        product, _, amounts = MERCHANTS[merchant]
        amount = amounts[amount_index % len(amounts)]
        msisdn = f"+234802{self.serial:04d}{subscriber:03d}"
        doc = self.sql("select api.charge(%s, %s, %s, %s, %s)", merchant, msisdn, product, self.key(), amount)[0][0]
        assert doc["status"] == "pending" and doc["amount_minor"] == amount
        proc = Proc(doc["id"], "charge", amount, merchant)
        self.charges.append(proc)
        self.refresh_calls(proc)

    def claim(self) -> None:
        docs = [r[0] for r in self.sql("select adapter.claim_calls('test_ng', 1000, interval '1 minute', 'prop')")]
        claimed = {d["call_id"] for d in docs}
        for call_id in claimed:
            if call_id in self.calls:  # calls of earlier examples may be claimed too
                proc, call = self.calls[call_id]
                assert call.status == "queued", f"claimed call {call_id} was {call.status}"
                call.status = "leased"
                if proc.status == "pending":
                    proc.status = "in_flight"
        for _, call in self.calls.values():
            if call.status == "queued" and call.attempt == 1:
                assert call.call_id in claimed, f"ready call {call.call_id} was not claimed"

    def expire(self) -> None:
        self.sql("select admin.advance_clock(interval '2 minutes')")
        self.sql("select adapter.expire_leases()")
        for proc, call in self.calls.values():
            if call.status == "leased":  # charges and refunds are not safe to repeat
                self.apply(proc, call, "unknown", "lease_expired")

    def answer(self, target: Proc, via: str, outcome: str, reason: str | None) -> None:
        """A carrier answer for the procedure's latest call, settled or not (late, early, duplicate)."""
        call = target.calls[-1]
        result = {"outcome": outcome, "reason": reason, "carrier_ref": f"ref-{call.call_id}"}
        if via == "callback":
            # One inbox key per (call, answer): repeating an answer is a duplicate by key.
            result |= {"correlator": call.correlator, "dedupe_key": f"{call.correlator}:{outcome}:{reason}"}
            status = self.sql("select adapter.record_callback('test_ng', %s)", Jsonb(result))[0][0]["status"]
            if status == "duplicate" and call.status not in FINAL:
                return  # the same callback twice: the inbox dropped it, as the model must
            if call.status == "queued":
                assert status == "not_sent"
                return  # never handed to the carrier: no callback can settle it
        else:
            self.sql("select adapter.complete_calls(%s)", Jsonb([result | {"call_id": call.call_id}]))
        self.apply(target, call, outcome, reason)

    def apply(self, proc: Proc, call: Call, outcome: str, reason: str | None) -> None:
        """What cp.apply_call_result should do, in the model."""
        if call.status in FINAL:
            return  # duplicate or conflict: nothing changes
        if outcome == "unknown":
            if call.status != "unknown":
                call.status = "unknown"
                if proc.status == "in_flight":
                    proc.status = "unknown"
            return
        call.status = "done" if outcome == "succeeded" else "failed"
        if proc.status == "pending":
            proc.status = "in_flight"
        if outcome == "succeeded" and proc.kind == "charge":
            proc.status, proc.collected = "succeeded", proc.amount
            _, fee_bp, _ = MERCHANTS[proc.merchant]
            proc.booked = split(proc.amount, VAT_BP["NG"], CARRIER_SHARE_BP["test_ng"], fee_bp)
        elif outcome == "succeeded":
            proc.status = "succeeded"
            self.reverse(proc.parent, proc.amount)
        elif proc.kind == "charge" and reason == "transient" and call.attempt < 3 and proc.status == "in_flight":
            self.refresh_calls(proc)  # a new attempt, a new call and correlator
            assert proc.calls[-1].attempt == call.attempt + 1 and proc.calls[-1].correlator != call.correlator
        else:
            proc.status = "failed"

    def reverse(self, charge: Proc, amount: int) -> None:
        """cp.post_refund_journal in the model: reverse each account in proportion; the last refund
        takes what remains; the rounding unit goes to the merchant."""
        remaining = charge.collected - charge.refunded
        parts = {}
        for kind, booked in charge.booked.items():
            if booked:
                parts[kind] = -booked if amount == remaining else -pg_round(Fraction(booked * amount, remaining))
        parts["merchant_payable"] -= sum(parts.values())
        for kind, part in parts.items():
            charge.booked[kind] += part
        charge.refunded += amount
        charge.status = "refunded" if charge.refunded >= charge.collected else "partially_refunded"

    def refund(self, charge: Proc, how: str, fraction: float) -> None:
        if how == "full":
            amount = None
        elif how == "too_much":
            amount = charge.collected + 1 if charge.collected else charge.amount + 1
        else:
            amount = max(1, int(charge.amount * fraction))
        refundable = charge.collected - sum(r.amount for r in charge.refunds if r.status != "failed")
        if charge.status not in ("succeeded", "partially_refunded"):
            expected_error = "CP043"
        elif (amount if amount is not None else refundable) <= 0:
            expected_error = "CP006"
        elif amount is not None and amount > refundable:
            expected_error = "CP041"
        else:
            expected_error = None
        try:
            doc = self.sql("select api.refund(%s, %s, %s, %s)", charge.merchant, charge.proc_id, self.key(),
                           amount)[0][0]
        except psycopg.Error as exc:
            assert exc.sqlstate == expected_error, f"refund {amount} of {charge}: {exc.sqlstate} {exc}"
            return
        assert expected_error is None, f"refund {amount} of {charge} should fail with {expected_error}"
        assert doc["amount_minor"] == (amount if amount is not None else refundable)
        refund = Proc(doc["id"], "refund", doc["amount_minor"], charge.merchant, parent=charge)
        charge.refunds.append(refund)
        self.refunds.append(refund)
        self.refresh_calls(refund)

    # -- invariants ---------------------------------------------------------------------------

    def check(self) -> None:
        unbalanced = self.sql("select journal_id from cp.ledger_entry group by 1 having sum(amount_minor) <> 0")
        assert not unbalanced, f"unbalanced journals {unbalanced}"
        doubles = self.sql("""select procedure_id from cp.carrier_call where operation = 'charge' and status = 'done'
                              group by procedure_id having count(*) > 1""")
        assert not doubles, f"payments charged twice at the carrier: {doubles}"
        doubles = self.sql("""select procedure_id from cp.journal where kind = 'charge'
                              group by procedure_id having count(*) > 1""")
        assert not doubles, f"payments with two charge journals: {doubles}"
        over = self.sql("""select c.procedure_id from cp.procedure c
                           where c.kind = 'charge' and (c.refunded_minor > c.collected_minor
                              or c.refunded_minor <> coalesce((select sum(r.amount_minor) from cp.procedure r
                                  where r.parent_id = c.procedure_id and r.status = 'succeeded'), 0)
                              or c.collected_minor < (select coalesce(sum(r.amount_minor), 0) from cp.procedure r
                                  where r.parent_id = c.procedure_id and r.status <> 'failed'))""")
        assert not over, f"refunds inconsistent with what was collected: {over}"
        if not self.charges:
            return
        ids = [p.proc_id for p in self.charges]
        rows = self.sql("""select procedure_id, status::text, collected_minor, refunded_minor
                           from cp.procedure where procedure_id = any(%s)""", ids)
        db = {r[0]: r[1:] for r in rows}
        for proc in self.charges + self.refunds:
            if proc.kind == "charge":
                assert db[proc.proc_id] == (proc.status, proc.collected, proc.refunded), (proc, db[proc.proc_id])
        statuses = dict(self.sql("select procedure_id, status::text from cp.procedure where procedure_id = any(%s)",
                                 [p.proc_id for p in self.refunds]))
        for refund in self.refunds:
            assert statuses[refund.proc_id] == refund.status, (refund, statuses[refund.proc_id])
        calls = dict(self.sql("select call_id, status::text from cp.carrier_call where call_id = any(%s)",
                              list(self.calls)))
        for call_id, (_, call) in self.calls.items():
            assert calls[call_id] == call.status, (call, calls[call_id])
        # The ledger of each payment (its charge journal and its refunds' journals), per account.
        booked = {}
        for pid, kind, total in self.sql(
            """select coalesce(p.parent_id, p.procedure_id), a.kind::text, sum(e.amount_minor)
               from cp.journal j join cp.procedure p using (procedure_id)
               join cp.ledger_entry e using (journal_id) join cp.ledger_account a using (account_id)
               where coalesce(p.parent_id, p.procedure_id) = any(%s) group by 1, 2""", ids):
            booked[(pid, kind)] = int(total)
        for proc in self.charges:
            for kind in ACCOUNTS:
                assert booked.get((proc.proc_id, kind), 0) == proc.booked.get(kind, 0), (proc, kind, booked)
        for merchant in MERCHANTS:
            ours = [p for p in self.charges if p.merchant == merchant]
            expected = -sum(p.booked.get("merchant_payable", 0) for p in ours)
            got = -sum(booked.get((p.proc_id, "merchant_payable"), 0) for p in ours)
            assert got == expected, f"merchant {merchant} payable {got}, expected {expected}"
            # Net of collected minus refunded: nothing is payable for fully refunded payments, and a
            # payment never refunded is payable exactly its split's merchant net.
            for p in ours:
                if p.status == "refunded":
                    assert booked.get((p.proc_id, "merchant_payable"), 0) == 0
                if p.status == "succeeded":
                    _, fee_bp, _ = MERCHANTS[merchant]
                    net = split(p.collected, VAT_BP["NG"], CARRIER_SHARE_BP["test_ng"], fee_bp)["merchant_payable"]
                    assert booked.get((p.proc_id, "merchant_payable"), 0) == net


OUTCOMES = st.sampled_from([
    ("succeeded", None), ("succeeded", None), ("succeeded", None),
    ("failed", "insufficient_funds"), ("failed", "transient"), ("unknown", "timeout"),
])
# Answers mostly go to a procedure still waiting for one; sometimes to any (late and duplicate answers).
ANSWER = st.tuples(st.just("answer"), st.integers(0, 50), st.sampled_from(["complete", "callback"]), OUTCOMES,
                   st.sampled_from([True, True, True, False]))
REFUND = st.tuples(st.just("refund"), st.integers(0, 50), st.sampled_from(["full", "part", "part", "too_much"]),
                   st.floats(0.05, 0.95))
REFUND_ANSWER = st.tuples(st.just("refund_answer"), st.integers(0, 50), st.sampled_from(["complete", "callback"]),
                          st.sampled_from([("succeeded", None), ("succeeded", None), ("failed", "rejected"),
                                           ("unknown", "timeout")]), st.sampled_from([True, True, True, False]))
ACTIONS = st.one_of(
    st.tuples(st.just("charge"), st.sampled_from(sorted(MERCHANTS)), st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.just("claim")),
    st.tuples(st.just("expire")),
    ANSWER, ANSWER, ANSWER,
    REFUND, REFUND,
    REFUND_ANSWER, REFUND_ANSWER,
)


@pytest.fixture
def world_conn(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        load_world(conn)
        for merchant, (product, _, amounts) in MERCHANTS.items():
            for amount in amounts:
                conn.execute("select admin.add_price_point(%s, %s, 'one_time', %s, 'NGN', %s, p_carrier => 'test_ng')",
                             (merchant, product, amount, f"{product}_{amount}"))
        yield conn


def pick(procs: list[Proc], index: int, open_only: bool) -> Proc:
    """The index-th procedure, among those whose latest call is not settled when open_only (if any)."""
    candidates = [p for p in procs if p.calls[-1].status not in FINAL] if open_only else []
    candidates = candidates or procs
    return candidates[index % len(candidates)]


def test_money_invariants_hold_under_random_interleavings(world_conn):
    serials = itertools.count(1)

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(ACTIONS, min_size=10, max_size=40))
    def run(actions):
        model = Model(world_conn, next(serials))
        # Start every example with a few charges so that the other actions have something to act on.
        for merchant in sorted(MERCHANTS):
            model.charge(merchant, 0, 0)
        model.answer(model.charges[0], "complete", "succeeded", None)
        for action in actions:
            name = action[0]
            if name == "charge":
                model.charge(*action[1:])
            elif name == "claim":
                model.claim()
            elif name == "expire":
                model.expire()
            elif name == "answer":
                _, index, via, (outcome, reason), open_only = action
                model.answer(pick(model.charges, index, open_only), via, outcome, reason)
            elif name == "refund":
                _, index, how, fraction = action
                model.refund(model.charges[index % len(model.charges)], how, fraction)
            elif name == "refund_answer" and model.refunds:
                _, index, via, (outcome, reason), open_only = action
                model.answer(pick(model.refunds, index, open_only), via, outcome, reason)
            model.check()

    run()
