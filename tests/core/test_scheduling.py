"""The scheduling engine through real subscriptions: period arithmetic, retry policies, carrier
outcomes, charging windows, attempts per day, cancellation in flight, clock moves, reminders,
receipts and the throughput budget under concurrent schedulers."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta

import psycopg
import pytest

from carrierpay import scheduler
from tests.core.world import claim, load_world, pin_sent_to, settle

pytestmark = pytest.mark.sql_api

NG = "+2348020000042"
GB = "+447700900042"
LIVE = "('pending', 'in_flight', 'unknown', 'succeeded', 'partially_refunded', 'refunded')"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def close(a: datetime | None, b: datetime, slack: timedelta = timedelta(seconds=5)) -> bool:
    """Equal within a few seconds: the business clock keeps ticking with real time between calls."""
    return a is not None and abs(a - b) < slack


def set_clock(conn, when) -> None:
    conn.execute("select admin.set_clock(%s)", [when])


def subscribe(conn, msisdn: str = NG, plan: str = "daily", key: str = "s1", timezone: str | None = None,
              carrier: str = "test_ng", settle_first: str | None = "succeeded") -> int:
    """Subscribe, confirm the opt-in and settle the first charge; returns the subscription id."""
    sub = conn.execute("select api.subscribe('acme', %s, 'club', %s, %s)", [msisdn, plan, key]).fetchone()[0]
    if timezone:
        conn.execute("update cp.subscriber set timezone = %s where msisdn = %s", [timezone, msisdn])
    conn.execute("select api.confirm_optin('acme', %s, %s)", [sub["optin_id"], pin_sent_to(conn, msisdn)])
    if settle_first:
        claim(conn, carrier)
        settle(conn, last_charge(conn, sub["id"])["procedure_id"], settle_first)
    return sub["id"]


def last_charge(conn, sub_id: int) -> dict:
    return conn.execute(
        "select to_jsonb(p) from cp.procedure p where kind = 'charge' and subscription_id = %s "
        "order by procedure_id desc limit 1", [sub_id]).fetchone()[0]


def sub_row(conn, sub_id: int) -> dict:
    return conn.execute("select to_jsonb(s) from cp.subscription s where subscription_id = %s", [sub_id]).fetchone()[0]


def field(conn, sub_id: int, name: str):
    return conn.execute(f"select {name} from cp.subscription where subscription_id = %s", [sub_id]).fetchone()[0]


def run_due(conn, limit: int = 1000, lookahead: int = 60) -> int:
    return conn.execute("select sched.run_due(%s, %s)", [limit, lookahead]).fetchone()[0]


def queue_renewal(conn, sub_id: int) -> int:
    """Move the clock just past the subscription's next charge and queue what is due (how many)."""
    set_clock(conn, field(conn, sub_id, "next_charge_at") + timedelta(minutes=1))
    return run_due(conn)


def claimed_charges(conn) -> list[dict]:
    """The charges among the calls test_ng's adapter claims now."""
    return [d for d in claim(conn, "test_ng") if d["operation"] == "charge"]


def first_renewal_failed(conn, reason: str) -> tuple[int, dict]:
    """A new subscription whose first renewal test_ng claims and fails with `reason`: (its id, the claimed call)."""
    load_world(conn)
    sub = subscribe(conn)
    queue_renewal(conn, sub)
    [doc] = claimed_charges(conn)
    settle(conn, doc["procedure_id"], "failed", reason)
    return sub, doc


def renew(conn, sub_id: int, outcome: str, reason: str | None = None, carrier: str = "test_ng") -> dict:
    """Move the clock to the subscription's next charge, queue it, claim it and settle it."""
    assert queue_renewal(conn, sub_id) == 1
    claim(conn, carrier)
    proc = last_charge(conn, sub_id)
    settle(conn, proc["procedure_id"], outcome, reason)
    return proc


def set_retry_policy(conn, policy: str) -> None:
    conn.execute("update cp.product set retry_policy = %s where code = 'club'", [policy])


# --- period arithmetic through real subscriptions -------------------------------------------------

def test_monthly_renewals_cross_month_ends_and_british_summer_time(conn):
    load_world(conn)
    set_clock(conn, at("2030-01-31 10:00+00:00"))
    sub = subscribe(conn, GB, "monthly", carrier="test_gb")
    assert close(field(conn, sub, "paid_through"), at("2030-02-28 10:00+00:00"))
    renew(conn, sub, "succeeded", carrier="test_gb")
    # 31 March: the day of the month comes back, and 10:00 London is now BST (UTC+1).
    assert close(field(conn, sub, "paid_through"), at("2030-03-31 10:00+01:00"))
    renew(conn, sub, "succeeded", carrier="test_gb")
    assert close(field(conn, sub, "paid_through"), at("2030-04-30 10:00+01:00"))
    amounts = [r[0] for r in conn.execute("select amount_minor from cp.procedure where kind = 'charge' "
                                          "and status = 'succeeded' order by procedure_id")]
    assert amounts == [499, 499, 499]
    # GB: a receipt after every charge; no quiet hours in the preset, so each is ready at once.
    receipts = conn.execute(
        "select count(*), bool_and(q.available_at = c.created_at) from cp.carrier_call c "
        "join cp.call_queue q using (call_id) where c.params->>'purpose' = 'receipt'").fetchone()
    assert receipts == (3, True)


@pytest.mark.parametrize(("start", "first_end", "second_end"), [
    # spring forward on 31 March 2030: the period over the change lasts 23 hours
    ("2030-03-30 09:00+00:00", "2030-03-31 09:00+01:00", "2030-04-01 09:00+01:00"),
    # fall back on 27 October 2030: it lasts 25 hours
    ("2030-10-26 09:00+01:00", "2030-10-27 09:00+00:00", "2030-10-28 09:00+00:00"),
])
def test_daily_renewals_keep_local_time_across_dst(conn, start, first_end, second_end):
    load_world(conn)
    set_clock(conn, at(start))
    sub = subscribe(conn, timezone="Europe/London")
    assert close(field(conn, sub, "paid_through"), at(first_end))
    renew(conn, sub, "succeeded")
    assert close(field(conn, sub, "paid_through"), at(second_end))
    assert close(field(conn, sub, "next_charge_at"), at(second_end))


# --- retry policies --------------------------------------------------------------------------------

def test_accumulate_collects_the_period_price_in_parts(conn):
    load_world(conn)
    set_retry_policy(conn, "accumulate")
    sub = subscribe(conn)
    paid_through = field(conn, sub, "paid_through")
    first = renew(conn, sub, "failed", "insufficient_funds")
    assert first["amount_minor"] == 10000 and "partial" not in first["metadata"]
    assert field(conn, sub, "retry_level") == 1

    part1 = renew(conn, sub, "succeeded")
    assert (part1["amount_minor"], part1["metadata"]) == (5000, {"partial": True})
    row = sub_row(conn, sub)
    # Half the price is in; the paid period has not moved and another part is scheduled.
    assert (row["collected_in_period"], row["period_index"], row["status"]) == (5000, 1, "retrying")
    assert close(field(conn, sub, "paid_through"), paid_through)
    assert row["next_charge_at"] is not None
    # A partial payment alone grants no open-ended entitlement.
    assert conn.execute("select count(*) from cp.entitlement where procedure_id = %s",
                        [part1["procedure_id"]]).fetchone()[0] == 0

    part2 = renew(conn, sub, "succeeded")
    assert part2["amount_minor"] == 5000
    row = sub_row(conn, sub)
    assert (row["collected_in_period"], row["period_index"], row["status"], row["retry_level"]) == (0, 2, "active", 0)
    assert close(field(conn, sub, "paid_through"), paid_through + timedelta(days=1))
    valid_until = conn.execute("select valid_until from cp.entitlement where procedure_id = %s",
                               [part2["procedure_id"]]).fetchone()[0]
    assert close(valid_until, paid_through + timedelta(days=1))
    collected = conn.execute("select sum(collected_minor) from cp.procedure where kind = 'charge' "
                             "and period_index = 1 and status = 'succeeded'").fetchone()[0]
    assert collected == 10000
    # The next period starts again at the full price.
    assert renew(conn, sub, "succeeded")["amount_minor"] == 10000


def test_accumulate_never_asks_more_than_is_owed(conn):
    load_world(conn)
    set_retry_policy(conn, "accumulate")
    # A third, small price point: the step after the half is 30.00, then the remainder only.
    conn.execute("select admin.add_price_point('acme', 'club', 'daily', 3000, 'NGN', 'club_third', "
                 "p_carrier => 'test_ng')")
    sub = subscribe(conn)
    renew(conn, sub, "failed", "insufficient_funds")
    assert renew(conn, sub, "succeeded")["amount_minor"] == 5000
    assert renew(conn, sub, "failed", "insufficient_funds")["amount_minor"] == 5000
    assert renew(conn, sub, "succeeded")["amount_minor"] == 3000
    assert renew(conn, sub, "succeeded")["amount_minor"] == 2000
    assert (field(conn, sub, "period_index"), field(conn, sub, "collected_in_period")) == (2, 0)


def test_defer_retries_the_same_amount_later(conn):
    load_world(conn)
    set_retry_policy(conn, "defer")
    sub = subscribe(conn)
    failed = renew(conn, sub, "failed", "insufficient_funds")
    assert field(conn, sub, "retry_level") == 0
    next_at = field(conn, sub, "next_charge_at")
    assert next_at >= conn.execute("select cp.clock_now()").fetchone()[0] + timedelta(hours=1)
    retry = renew(conn, sub, "succeeded")
    assert retry["amount_minor"] == failed["amount_minor"] == 10000
    assert retry["variant"] == "club_full"
    assert (field(conn, sub, "status"), field(conn, sub, "period_index")) == ("active", 2)


def fail_until(conn, sub_id: int, status: str, limit: int = 200) -> None:
    for _ in range(limit):
        if field(conn, sub_id, "status") == status:
            return
        renew(conn, sub_id, "failed", "insufficient_funds")
    raise AssertionError(f"subscription never reached {status}")


def test_suspended_subscription_reactivates_on_success_and_renews_from_then(conn):
    load_world(conn)
    sub = subscribe(conn)
    fail_until(conn, sub, "suspended")
    index = field(conn, sub, "period_index")
    proc = renew(conn, sub, "succeeded")
    now = conn.execute("select cp.clock_now()").fetchone()[0]
    row = sub_row(conn, sub)
    assert row["status"] == "active" and row["retry_level"] == 0
    # Re-anchored: the paid day starts at the successful charge, not at the missed due date.
    assert close(field(conn, sub, "paid_through"), now + timedelta(days=1))
    assert close(field(conn, sub, "next_charge_at"), now + timedelta(days=1))
    assert row["period_index"] > index
    assert close(conn.execute("select valid_until from cp.entitlement where procedure_id = %s",
                              [proc["procedure_id"]]).fetchone()[0], now + timedelta(days=1))
    # The renewals after it go on from the new anchor, one live charge per period.
    renew(conn, sub, "succeeded")
    assert close(field(conn, sub, "paid_through"), now + timedelta(days=2))
    renew(conn, sub, "succeeded")
    assert close(field(conn, sub, "paid_through"), now + timedelta(days=3))
    assert conn.execute(f"select max(n) from (select count(*) n from cp.procedure where kind = 'charge' "
                        f"and status in {LIVE} group by period_index) x").fetchone()[0] == 1


def test_suspended_reminder_period_is_not_reused_after_reactivation(conn):
    """The period index only grows, so 'reminded for this period' stays true to its word."""
    load_world(conn)
    sub = subscribe(conn)
    seen = [field(conn, sub, "period_index")]
    fail_until(conn, sub, "suspended")
    renew(conn, sub, "succeeded")
    seen.append(field(conn, sub, "period_index"))
    renew(conn, sub, "succeeded")
    seen.append(field(conn, sub, "period_index"))
    assert seen == sorted(set(seen))


# --- carrier outcomes ------------------------------------------------------------------------------

@pytest.mark.parametrize("reason", ["barred", "subscriber_invalid"])
def test_permanent_refusal_cancels_at_once(conn, reason):
    load_world(conn)
    sub = subscribe(conn)
    renew(conn, sub, "failed", reason)
    row = sub_row(conn, sub)
    assert (row["status"], row["cancel_reason"], row["next_charge_at"]) == ("cancelled", reason, None)
    # No retry is ever queued for it.
    set_clock(conn, conn.execute("select cp.clock_now() + interval '3 days'").fetchone()[0])
    assert run_due(conn) == 0
    history = [r[0] for r in conn.execute("select payload->>'to' from cp.event where aggregate_type = 'subscription' "
                                          "and aggregate_id = %s order by event_id", [sub])]
    assert history[-2:] == ["active", "cancelled"]


def test_throttled_requeues_the_same_call(conn):
    sub, doc = first_renewal_failed(conn, "throttled")
    call = conn.execute("select status::text, correlator, attempt from cp.carrier_call where call_id = %s",
                        [doc["call_id"]]).fetchone()
    assert call == ("queued", doc["correlator"], 1)
    assert conn.execute("select count(*) from cp.carrier_call where procedure_id = %s",
                        [doc["procedure_id"]]).fetchone()[0] == 1
    assert conn.execute("select status::text from cp.procedure where procedure_id = %s",
                        [doc["procedure_id"]]).fetchone()[0] == "in_flight"
    # Not ready before the pause (5 s by default) is over; then the very same call comes back.
    assert claimed_charges(conn) == []
    conn.execute("select admin.advance_clock(interval '6 seconds')")
    [again] = claimed_charges(conn)
    assert (again["call_id"], again["correlator"]) == (doc["call_id"], doc["correlator"])
    settle(conn, doc["procedure_id"], "succeeded")
    assert field(conn, sub, "period_index") == 2


def test_transient_failure_is_a_new_attempt_with_a_new_correlator(conn):
    sub, doc = first_renewal_failed(conn, "transient")
    calls = conn.execute("select call_id, status::text, attempt, correlator from cp.carrier_call "
                         "where procedure_id = %s order by call_id", [doc["procedure_id"]]).fetchall()
    assert [(c[1], c[2]) for c in calls] == [("failed", 1), ("queued", 2)]
    assert calls[1][3] != calls[0][3]
    assert field(conn, sub, "next_charge_at") is None  # still the same renewal, not a new one
    conn.execute("select admin.advance_clock(interval '31 seconds')")
    [retry] = claimed_charges(conn)
    assert (retry["call_id"], retry["attempt"], retry["amount_minor"]) == (calls[1][0], 2, doc["amount_minor"])
    settle(conn, doc["procedure_id"], "succeeded")
    assert (field(conn, sub, "status"), field(conn, sub, "period_index")) == ("active", 2)


def test_attempts_per_day_are_capped_in_local_time(conn):
    load_world(conn)
    sub = subscribe(conn)  # 13:00 Lagos; club retries at fixed hours 1, 4, 7, ... 22
    for _ in range(9):
        renew(conn, sub, "failed", "insufficient_funds")
    per_day = conn.execute(
        "select (created_at at time zone 'Africa/Lagos')::date d, count(*), "
        "array_agg(extract(hour from created_at at time zone 'Africa/Lagos')::int order by created_at) "
        "from cp.procedure where kind = 'charge' and period_index = 1 group by 1 order by 1").fetchall()
    assert [n for _, n, _ in per_day] == [3, 3, 3]
    assert [hours for _, _, hours in per_day] == [[13, 16, 19], [1, 4, 7], [1, 4, 7]]


def test_run_due_postpones_a_subscription_whose_day_is_used_up(conn):
    load_world(conn)
    sub = subscribe(conn)
    now = conn.execute("select cp.clock_now()").fetchone()[0]
    conn.execute("update cp.subscription set attempts_today = 3, attempts_day = (cp.clock_now() at time zone "
                 "'Africa/Lagos')::date, next_charge_at = cp.clock_now() where subscription_id = %s", [sub])
    assert run_due(conn) == 0
    next_at = field(conn, sub, "next_charge_at")
    local = conn.execute("select (%s::timestamptz at time zone 'Africa/Lagos')", [next_at]).fetchone()[0]
    assert local.date() == (now + timedelta(hours=1)).date() + timedelta(days=1) and local.hour == 1


# --- charging windows ------------------------------------------------------------------------------

def next_retry_local(conn, sub_id: int) -> datetime:
    return conn.execute("select cp.next_retry_time(%s) at time zone 'Africa/Lagos'", [sub_id]).fetchone()[0]


def test_a_window_shorter_than_an_hour_is_still_reached(conn):
    load_world(conn)
    sub = subscribe(conn)
    conn.execute("""update cp.carrier set spec = spec || '{"charging_hours": "08:15-08:45"}' where code = 'test_ng'""")
    local = next_retry_local(conn, sub)
    assert local.time().isoformat() == "08:15:00"
    # Reached from run_due too: a due renewal outside the window moves to 08:15, and is charged then.
    conn.execute("update cp.subscription set next_charge_at = cp.clock_now() where subscription_id = %s", [sub])
    assert run_due(conn) == 0
    due = field(conn, sub, "next_charge_at")
    set_clock(conn, due)
    assert run_due(conn) == 1


def test_same_start_and_end_means_no_restriction(conn):
    """'HH:MM-HH:MM' with equal ends is a whole day (cp.in_window), never an empty window."""
    load_world(conn)
    sub = subscribe(conn)
    conn.execute("""update cp.carrier set spec = spec || '{"charging_hours": "08:00-08:00"}' where code = 'test_ng'""")
    now_local = conn.execute("select cp.clock_now() at time zone 'Africa/Lagos'").fetchone()[0]
    local = next_retry_local(conn, sub)
    assert timedelta(hours=1) <= local - now_local <= timedelta(hours=12)


def test_best_hour_mostly_picks_the_soonest_of_the_best_hours(conn):
    load_world(conn)
    conn.execute("update cp.product set retry_timing = 'best_hour' where code = 'club'")
    sub = subscribe(conn)  # 13:00 Lagos
    # The three best hours (max_attempts_per_day = 3): 20 (best), 9 and 15; the rest are poor.
    conn.execute("insert into cp.hour_stats (carrier_id, local_hour, attempts, successes) "
                 "select carrier_id, h, 1000, case h when 20 then 600 when 9 then 500 when 15 then 400 else 50 end "
                 "from cp.carrier, generate_series(0, 23) h where code = 'test_ng'")
    hours = [r[0] for r in conn.execute(
        "select extract(hour from cp.next_retry_time(%s) at time zone 'Africa/Lagos')::int "
        "from generate_series(1, 200)", [sub])]
    share = hours.count(15) / len(hours)
    assert 0.7 < share < 1.0  # exploitation most of the time, exploration sometimes
    # Once the day's attempts are used up, the next day's first good hour.
    conn.execute("update cp.subscription set attempts_today = 3, attempts_day = "
                 "(cp.clock_now() at time zone 'Africa/Lagos')::date")
    hours = [r[0] for r in conn.execute(
        "select extract(hour from cp.next_retry_time(%s) at time zone 'Africa/Lagos')::int "
        "from generate_series(1, 100)", [sub])]
    assert hours.count(9) > 70


def test_subscriber_timing_puts_a_first_attempt_on_the_learned_top_up_day(conn):
    """Renewals collected every third day teach a three-day rhythm; the next period's first attempt
    then waits for the next such day (inside the window), where a subscriber with no rhythm yet is
    charged on the period's own day."""
    load_world(conn)
    conn.execute("update cp.product set retry_timing = 'subscriber' where code = 'club'")
    conn.execute("""update cp.carrier set rules_override = '{"charging_hours": "08:00-20:00"}'
                    where code = 'test_ng'""")
    sub = subscribe(conn)  # collected on 4 March, 13:00 Lagos
    conn.execute("select sched.fold_hour_stats()")

    def first_days(due: str, n: int = 60) -> list:
        return [r[0] for r in conn.execute(
            "select (cp.first_attempt_time(%s, %s) at time zone 'Africa/Lagos') from generate_series(1, %s)",
            [sub, at(due), n])]

    # Thin history: one top-up seen and no gap yet, so every day.
    set_clock(conn, at("2030-03-04 18:00+00:00"))
    assert all(at("2030-03-05 13:00") <= t < at("2030-03-06 13:00") for t in first_days("2030-03-05 12:00+00:00"))

    for day in (7, 10, 13, 16):
        set_clock(conn, at(f"2030-03-{day:02d} 12:00+00:00"))
        conn.execute("update cp.subscription set next_charge_at = cp.clock_now() where subscription_id = %s", [sub])
        assert run_due(conn) == 1
        claim(conn, "test_ng")
        settle(conn, last_charge(conn, sub)["procedure_id"], "succeeded")
        conn.execute("select sched.fold_hour_stats()")
    last, cycle, gaps, planned = conn.execute(
        "select (last_topup_at at time zone 'Africa/Lagos')::date, cycle_tenths, cycle_gaps, "
        "cp.timing_rhythm_days(cycle_tenths, cycle_gaps) "
        "from cp.subscriber_timing t join cp.subscription s using (subscriber_id) where subscription_id = %s",
        [sub]).fetchone()
    assert (str(last), cycle, gaps, planned) == ("2030-03-16", 30, 4, 3)

    conn.execute("select setseed(0.5)")
    days = first_days("2030-03-17 12:00+00:00")
    assert all(8 <= t.hour < 20 for t in days)  # inside the charging window, explored or not
    on_rhythm = [t for t in days if t.date().isoformat() == "2030-03-19"]
    # the rest explored: they stay on the period's first day
    assert all(at("2030-03-17 13:00") <= t < at("2030-03-18 13:00") for t in days if t not in on_rhythm)
    assert len(days) - 20 <= len(on_rhythm) < len(days)
    # Never past the carrier's grace days: with one, a top-up day two days after the period's start is not waited for.
    conn.execute("""update cp.carrier set rules_override = '{"charging_hours": "08:00-20:00", "grace_days": 1}'
                    where code = 'test_ng'""")
    assert all(t < at("2030-03-18 13:00") for t in first_days("2030-03-17 12:00+00:00"))


def test_subscriber_timing_retries_at_once_just_after_a_top_up(conn):
    """A period paid at 13:00 shows a top-up; the next period's full-price attempt failing an hour
    later is retried, stepped down, at the soonest allowed slot, not at the subscriber's best hours
    the next day; a failure with no fresh top-up waits for their best hours."""
    load_world(conn)
    conn.execute("update cp.product set retry_timing = 'subscriber' where code = 'club'")
    sub = subscribe(conn)  # collected on 4 March, 13:00 Lagos
    conn.execute("select sched.fold_hour_stats()")
    # Best hours 20:00 and 21:00 from the subscriber's own history.
    conn.execute("update cp.subscriber_timing set hours = decode(repeat('0a', 24) || repeat('00', 20) || '0908' "
                 "|| repeat('00', 2), 'hex')")
    # The next period is already begun: it is charged an hour later and fails at full price.
    conn.execute("update cp.subscription set next_charge_at = cp.clock_now() + interval '1 hour' "
                 "where subscription_id = %s", [sub])
    renew(conn, sub, "failed", "insufficient_funds")
    now_local = conn.execute("select cp.clock_now() at time zone 'Africa/Lagos'").fetchone()[0]
    retry_local = conn.execute("select next_charge_at at time zone 'Africa/Lagos' from cp.subscription "
                               "where subscription_id = %s", [sub]).fetchone()[0]
    assert field(conn, sub, "retry_level") == 1
    assert timedelta(hours=1) <= retry_local - now_local <= timedelta(hours=2)
    # Stepped down and failed again, the top-up is no longer fresh enough to chase: their best hours.
    conn.execute("update cp.subscriber_timing set last_topup_at = cp.clock_now() - interval '6 hours'")
    renew(conn, sub, "failed", "insufficient_funds")
    hours = {r[0] for r in conn.execute(
        "select extract(hour from cp.next_retry_time(%s) at time zone 'Africa/Lagos')::int "
        "from generate_series(1, 30)", [sub])}
    assert {20, 21} & hours


# --- cancellation in flight and clock moves --------------------------------------------------------

def test_cancelled_while_in_flight_success_stops_renewals_and_can_be_refunded(conn):
    load_world(conn)
    sub = subscribe(conn)
    queue_renewal(conn, sub)
    claim(conn, "test_ng")
    proc = last_charge(conn, sub)
    conn.execute("select api.cancel_subscription('acme', %s, 'user asked')", [sub])
    settle(conn, proc["procedure_id"], "succeeded")  # the carrier had already charged
    row = sub_row(conn, sub)
    assert (row["status"], row["next_charge_at"], row["cancel_reason"]) == ("cancelled", None, "user asked")
    assert conn.execute("select status::text from cp.procedure where procedure_id = %s",
                        [proc["procedure_id"]]).fetchone()[0] == "succeeded"
    assert conn.execute("select valid_until is not null from cp.entitlement where procedure_id = %s",
                        [proc["procedure_id"]]).fetchone()[0]
    set_clock(conn, conn.execute("select cp.clock_now() + interval '5 days'").fetchone()[0])
    assert run_due(conn) == 0
    refund = conn.execute("select api.refund('acme', %s, 'r1')", [proc["procedure_id"]]).fetchone()[0]
    assert refund["status"] == "pending" and refund["amount_minor"] == 10000


def test_cancelled_while_in_flight_failure_schedules_nothing(conn):
    load_world(conn)
    sub = subscribe(conn)
    queue_renewal(conn, sub)
    claim(conn, "test_ng")
    conn.execute("select api.cancel_subscription('acme', %s)", [sub])
    settle(conn, last_charge(conn, sub)["procedure_id"], "failed", "insufficient_funds")
    assert (field(conn, sub, "status"), field(conn, sub, "next_charge_at")) == ("cancelled", None)


def test_clock_moved_backwards_never_charges_a_period_twice(conn):
    load_world(conn)
    sub = subscribe(conn)
    renew(conn, sub, "succeeded")
    late = conn.execute("select cp.clock_now()").fetchone()[0]
    # Back three days and forward again, hour by hour: nothing is due that was already paid.
    for hours in range(-72, 1, 6):
        set_clock(conn, late + timedelta(hours=hours))
        assert run_due(conn) == 0
    # A renewal in flight, then the clock jumps back: it is not queued again.
    assert queue_renewal(conn, sub) == 1
    set_clock(conn, late - timedelta(days=2))
    assert run_due(conn) == 0
    # Even a direct second start for the same period is refused by the unique index.
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("select cp.start_renewal(%s)", [sub])
    assert conn.execute(f"select max(n) from (select count(*) n from cp.procedure where kind = 'charge' "
                        f"and status in {LIVE} group by period_index) x").fetchone()[0] == 1


# --- reminders and receipts under quiet hours ------------------------------------------------------

IN_CARRIER = """select admin.onboard_carrier('{"code": "test_in", "name": "Test IN", "country": "IN", "mcc": "404",
  "mnc": "10", "currency": "INR", "timezone": "Asia/Kolkata", "number_ranges": ["+91980"], "throughput": {"tps": 1000},
  "regulation": "IN", "operations": {"charge": {"pattern": "sync"}, "send_sms": {"pattern": "sync"}}}'::jsonb)"""


def reminders(conn) -> list[tuple]:
    return conn.execute(
        "select q.available_at at time zone 'Asia/Kolkata', c.params->>'text' from cp.carrier_call c "
        "join cp.call_queue q using (call_id) where c.params->>'purpose' = 'reminder' order by c.call_id").fetchall()


def test_indian_renewal_reminder_is_sent_once_a_day_ahead_and_waits_for_quiet_hours_to_end(conn):
    load_world(conn)
    conn.execute(IN_CARRIER)
    conn.execute("select admin.add_price_point('acme', 'club', 'monthly', 9900, 'INR', 'club_month', "
                 "p_carrier => 'test_in')")
    set_clock(conn, at("2030-03-04 22:30+05:30"))
    sub = subscribe(conn, "+919800000042", "monthly", carrier="test_in")
    assert close(field(conn, sub, "next_charge_at"), at("2030-04-04 22:30+05:30"))

    set_clock(conn, at("2030-04-03 22:00+05:30"))  # 24.5 h ahead: too early
    run_due(conn)
    assert reminders(conn) == []
    set_clock(conn, at("2030-04-03 22:31+05:30"))  # inside the 24 h notice, but in quiet hours
    run_due(conn)
    run_due(conn)
    [(ready_at, text)] = reminders(conn)
    assert ready_at == datetime(2030, 4, 4, 9, 0) and "99.00 INR" in text and "04 Apr 22:30" in text
    # Held, not dropped: nothing to send at night, then it goes at 09:00.
    assert [d for d in claim(conn, "test_in") if d.get("purpose") == "reminder"] == []
    set_clock(conn, at("2030-04-04 09:01+05:30"))
    assert len([d for d in claim(conn, "test_in") if d.get("purpose") == "reminder"]) == 1
    run_due(conn)
    assert len(reminders(conn)) == 1

    # The next period gets its own reminder, once.
    renew(conn, sub, "succeeded", carrier="test_in")
    set_clock(conn, at("2030-05-03 23:00+05:30"))
    run_due(conn)
    run_due(conn)
    assert conn.execute("select count(*) from cp.carrier_call where params->>'purpose' = 'reminder'"
                        ).fetchone()[0] == 2


def test_gb_receipt_is_held_by_quiet_hours_where_they_apply(conn):
    load_world(conn)
    conn.execute("""update cp.carrier set rules_override = rules_override || '{"sms_quiet_hours":
                    [{"days": [1,2,3,4,5,6,7], "from": "21:00", "to": "08:00"}]}' where code = 'test_gb'""")
    set_clock(conn, at("2030-01-31 22:00+00:00"))
    sub = subscribe(conn, GB, "monthly", carrier="test_gb")
    renew(conn, sub, "succeeded", carrier="test_gb")  # 28 Feb, 22:00
    rows = conn.execute(
        "select q.available_at, c.created_at from cp.carrier_call c join cp.call_queue q using (call_id) "
        "where c.params->>'purpose' = 'receipt' order by c.call_id").fetchall()
    assert [r[0] for r in rows] == [at("2030-02-01 08:00+00:00"), at("2030-03-01 08:00+00:00")]


# --- the budget ------------------------------------------------------------------------------------

def add_due_subscriptions(conn, n: int, carrier: str = "test_ng") -> None:
    """n active daily subscriptions whose renewal is due now (bulk, without the opt-in journey)."""
    conn.execute("""
        with c as (select carrier_id from cp.carrier where code = %(carrier)s),
        s as (
            insert into cp.subscriber (msisdn, carrier_id)
            select '+23480' || lpad(g::text, 8, '0'), c.carrier_id from generate_series(1, %(n)s) g, c
            returning subscriber_id, carrier_id
        )
        insert into cp.subscription (merchant_id, subscriber_id, carrier_id, product_id, plan, status, price_point_id,
                                     anchor_local, period_index, next_charge_at, paid_through, status_since)
        select p.merchant_id, s.subscriber_id, s.carrier_id, p.product_id, 'daily', 'active', pp.price_point_id,
               (cp.clock_now() at time zone 'Africa/Lagos') - interval '1 day 1 minute', 1,
               cp.clock_now() - interval '1 minute', cp.clock_now() - interval '1 minute', cp.clock_now()
        from s join cp.product p on p.code = 'club'
        join cp.price_point pp on pp.product_id = p.product_id and pp.carrier_id = s.carrier_id
                              and pp.amount_minor = 10000
    """, {"n": n, "carrier": carrier})


def ready_in_queue(conn, carrier: str = "test_ng") -> int:
    return conn.execute("select count(*) from cp.call_queue q join cp.carrier c using (carrier_id) "
                        "where c.code = %s and q.lease_until is null", [carrier]).fetchone()[0]


def queue_due(db_url: str, batch: int) -> int:
    """The scheduler tick's queueing step (carrierpay.scheduler.queue_due) on its own connection."""
    async def go() -> int:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as aconn:
            return await scheduler.queue_due(aconn, batch)

    return asyncio.run(go())


def test_a_tick_queues_every_due_renewal_when_a_batch_only_moves_rows_to_their_next_slot(conn, db_url):
    load_world(conn)
    add_due_subscriptions(conn, 30)
    # The ten earliest due have used today's attempts: the first batch of ten only moves them to
    # tomorrow and queues nothing, while twenty more are due.
    conn.execute("""
        update cp.subscription set attempts_today = 3,
                                   attempts_day = (cp.clock_now() at time zone 'Africa/Lagos')::date,
                                   next_charge_at = cp.clock_now() - interval '2 minutes'
        where subscription_id in (select subscription_id from cp.subscription order by subscription_id limit 10)""")
    assert conn.execute("select sched.due_left()").fetchone()[0] == 30
    assert queue_due(db_url, batch=10) == 20
    assert conn.execute("select sched.due_left()").fetchone()[0] == 0
    assert conn.execute("select count(*) from cp.procedure where kind = 'charge'").fetchone()[0] == 20
    moved = conn.execute("select count(*) from cp.subscription where attempts_today = 3 "
                         "and next_charge_at > cp.clock_now() + interval '1 hour'").fetchone()[0]
    assert moved == 10


def test_a_tick_stops_when_the_carriers_room_is_used_up_and_leaves_the_rest_due(conn, db_url):
    load_world(conn)
    conn.execute("update cp.carrier set tps = 1 where code = 'test_ng'")  # room: 1 call/s x 60 s lookahead
    add_due_subscriptions(conn, 100)
    assert queue_due(db_url, batch=25) == 60
    assert conn.execute("select sched.due_left()").fetchone()[0] == 40
    # The next tick finds no room either until the adapter takes calls from the queue.
    assert queue_due(db_url, batch=25) == 0


def test_two_concurrent_schedulers_share_the_budget(conn, db_url):
    load_world(conn)
    tps, lookahead = 3, 40
    conn.execute("update cp.carrier set tps = %s where code = 'test_ng'", [tps])
    add_due_subscriptions(conn, 600)
    budget = tps * lookahead
    stop = threading.Event()
    errors: list[BaseException] = []
    samples: list[int] = []
    queued = [0, 0]

    def scheduler(i: int) -> None:
        try:
            with psycopg.connect(db_url, autocommit=True) as c:
                while not stop.is_set():
                    queued[i] += c.execute("select sched.run_due(37, %s)", [lookahead]).fetchone()[0]
                    stop.wait(0.005)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def watcher() -> None:
        with psycopg.connect(db_url, autocommit=True) as c:
            while not stop.is_set():
                samples.append(ready_in_queue(c))

    threads = [threading.Thread(target=scheduler, args=(i,)) for i in range(2)] + [threading.Thread(target=watcher)]
    for t in threads:
        t.start()
    try:
        done = 0
        # An adapter drains the queue in rounds while both schedulers keep refilling it.
        for _ in range(6):
            for _ in range(200):
                if ready_in_queue(conn) >= budget or done + ready_in_queue(conn) >= 600:
                    break
                threading.Event().wait(0.02)
            # (completing straight from the queue: claim_calls would hold this adapter to 3 calls a second)
            ids = [r[0] for r in conn.execute("select call_id from cp.call_queue order by call_id limit 50")]
            results = [{"call_id": i, "outcome": "succeeded"} for i in ids]
            if results:
                conn.execute("select adapter.complete_calls(%s::jsonb)", [psycopg.types.json.Jsonb(results)])
            done += len(results)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert samples and max(samples) <= budget
    assert done > budget  # the schedulers refilled the queue after each drain
    assert sum(queued) == conn.execute("select count(*) from cp.procedure where kind = 'charge'").fetchone()[0]
    # No subscription ever had two live charges, and each queued one matches a cleared due time.
    assert conn.execute(f"select count(*) from (select subscription_id from cp.procedure where kind = 'charge' "
                        f"and status in {LIVE} group by subscription_id, period_index having count(*) > 1) x"
                        ).fetchone()[0] == 0
    assert conn.execute("select count(*) from cp.subscription s where next_charge_at is null and not exists "
                        "(select 1 from cp.procedure p where p.subscription_id = s.subscription_id)").fetchone()[0] == 0


def test_held_sms_do_not_eat_the_charging_budget(conn):
    """Messages waiting for quiet hours to end are not ready: they must not block renewals."""
    load_world(conn)
    conn.execute("""update cp.carrier set tps = 1, rules_override = rules_override || '{"sms_quiet_hours":
                    [{"days": [1,2,3,4,5,6,7], "from": "00:00", "to": "23:59"}]}' where code = 'test_ng'""")
    add_due_subscriptions(conn, 30)
    conn.execute("select cp.queue_sms(subscriber_id, 'news', 'reminder') from cp.subscriber limit 20")
    assert run_due(conn, 100, 10) == 10
    assert ready_in_queue(conn) == 30
