"""Forging consent by guessing PINs, as a merchant with its own database connection would try it.

The attacker holds the merchant's login role (cp_merchant_acme) and asks for PIN opt-ins for a
number that is not its customer, then guesses. An adapter (role carrierpay_adapter) sends the PIN
SMS as production does. Whatever the attacker does with its transactions, the number is locked
after the regulation's allowance of wrong PINs, its owner receives a handful of SMS, and nothing is
confirmed. The last test checks that the limits every shipped preset configures keep such a brute
force within 1 in 10,000 odds (docs/sql-api.md, "Opt-in limits").
"""

from __future__ import annotations

import itertools
from collections import Counter
from fractions import Fraction

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.core.world import load_world
from tests.security.conftest import role_url

VICTIM = "+447700900777"  # a GB number (test_gb, GB preset: 6-digit PINs, default limits)
GUESSES = (f"{n:06d}" for n in itertools.count())  # the attacker's guesses, never repeated


@pytest.fixture
def world(db_url):
    with psycopg.connect(db_url, autocommit=True) as owner:
        load_world(owner)
    merchant = psycopg.connect(role_url(db_url, "cp_merchant_acme"), autocommit=True)
    adapter = psycopg.connect(db_url, autocommit=True)
    adapter.execute("set role carrierpay_adapter")
    owner = psycopg.connect(db_url, autocommit=True)
    try:
        yield merchant, adapter, owner
    finally:
        for conn in (merchant, adapter, owner):
            conn.close()


def send_sms(adapter: psycopg.Connection) -> int:
    """What the adapter daemon does: claim the queued calls and report them delivered."""
    calls = [row[0] for code in ("test_gb", "test_ng") for row in adapter.execute(
        "select adapter.claim_calls(%s, 1000, interval '1 minute', 'sms')", [code]).fetchall()]
    if calls:
        adapter.execute("select adapter.complete_calls(%s)",
                        [Jsonb([{"call_id": call["call_id"], "outcome": "succeeded"} for call in calls])])
    return len(calls)


def sqlstate(conn: psycopg.Connection, query: str, params: list) -> str | None:
    try:
        conn.execute(query, params)
    except psycopg.Error as exc:
        return exc.sqlstate
    return None


def checks_on(owner: psycopg.Connection, number: str) -> tuple[int, int, int]:
    """(PIN checks made, whether or not their transaction committed; PIN SMS sent; consents given)."""
    return owner.execute(
        "select (select coalesce(sum(cp.optin_checks(o)), 0) from cp.optin o where o.subscriber_id = s.subscriber_id),"
        " (select count(*) from cp.procedure p where p.subscriber_id = s.subscriber_id and p.kind = 'sms'),"
        " (select count(*) from cp.consent c where c.subscriber_id = s.subscriber_id)"
        " from cp.subscriber s where s.msisdn = %s", [number]).fetchone()


def test_guessing_with_committed_attempts_locks_the_number(world):
    merchant, adapter, owner = world
    answers: Counter = Counter()
    refused = None
    for n in range(1661):  # as many requests as it takes
        try:
            optin = merchant.execute("select api.request_optin('acme', %s, 'gems', %s)",
                                     [VICTIM, f"attack-{n}"]).fetchone()[0]
        except psycopg.Error as exc:
            refused = exc.sqlstate
            break
        send_sms(adapter)
        for _ in range(3):
            try:
                answer = merchant.execute("select api.confirm_optin('acme', %s, %s)",
                                          [optin["id"], next(GUESSES)]).fetchone()[0]
            except psycopg.Error as exc:
                answers[exc.sqlstate] += 1
                break
            answers[answer["error"]["code"] if "error" in answer else answer["status"]] += 1
    assert refused == "CP037", "the number is locked: no more PINs are sent to it"
    # Three opt-ins of three wrong PINs each; the tenth wrong PIN reports the lock, the next is refused.
    assert answers == {"CP031": 6, "CP033": 3, "CP037": 2}, answers
    assert checks_on(owner, VICTIM) == (10, 4, 0)  # ten guesses, four PIN SMS, no consent
    assert sqlstate(merchant, "select api.request_optin('acme', %s, 'gems', 'again')", [VICTIM]) == "CP037"
    last = owner.execute("select max(optin_id) from cp.optin").fetchone()[0]
    assert sqlstate(merchant, "select api.confirm_optin('acme', %s, '000000')", [last]) == "CP037"
    assert checks_on(owner, VICTIM)[0] == 10, "a refused confirmation compares nothing"


def test_rolling_back_wrong_guesses_does_not_give_them_back(world):
    merchant, adapter, owner = world
    answers: Counter = Counter()
    for n in range(1661):
        try:
            optin = merchant.execute("select api.request_optin('acme', %s, 'gems', %s)",
                                     [VICTIM, f"undo-{n}"]).fetchone()[0]
        except psycopg.Error as exc:
            answers[f"request {exc.sqlstate}"] += 1
            break
        send_sms(adapter)
        for _ in range(10):  # more than the opt-in's three attempts: rolled back, they seem free
            try:
                with merchant.transaction():
                    answer = merchant.execute("select api.confirm_optin('acme', %s, %s)",
                                              [optin["id"], next(GUESSES)]).fetchone()[0]
                    answers[answer["status"]] += 1
                    if answer["status"] != "confirmed":
                        raise psycopg.Rollback()
            except psycopg.Error as exc:
                answers[exc.sqlstate] += 1
                break
    # Each opt-in took three guesses (the third refused afterwards), and the number locked after ten.
    assert answers["request CP037"] == 1 and answers["confirmed"] == 0, answers
    assert answers["CP033"] == 3 and answers["CP037"] == 1, answers
    assert checks_on(owner, VICTIM) == (10, 4, 0)
    assert owner.execute("select coalesce(sum(attempts), 0) from cp.optin").fetchone()[0] == 0, \
        "nothing the attacker rolled back was committed, yet every guess counted"


def test_a_statement_that_fails_on_a_wrong_guess_still_spends_it(world):
    merchant, adapter, owner = world
    optin = merchant.execute("select api.request_optin('acme', %s, 'gems', 'one')", [VICTIM]).fetchone()[0]
    send_sms(adapter)
    # Divides by zero (so the statement fails and nothing it wrote is kept) unless the guess was right.
    probe = "select 1 / (api.confirm_optin('acme', %s, %s) ->> 'status' = 'confirmed')::int"
    codes = [sqlstate(merchant, probe, [optin["id"], next(GUESSES)]) for _ in range(5)]
    assert codes == ["22012", "22012", "22012", "CP033", "CP033"]  # division by zero, then no tries left
    assert checks_on(owner, VICTIM) == (3, 1, 0)


def test_a_pin_cannot_be_guessed_in_the_transaction_that_asked_for_it(world):
    merchant, _, owner = world
    with pytest.raises(psycopg.Error) as raised, merchant.transaction():
        optin = merchant.execute("select api.request_optin('acme', %s, 'gems', 'same')", [VICTIM]).fetchone()[0]
        merchant.execute("select api.confirm_optin('acme', %s, %s)", [optin["id"], next(GUESSES)])
    assert raised.value.sqlstate == "CP039"  # its SMS was not sent: nothing of this opt-in is committed
    assert owner.execute("select count(*) from cp.optin").fetchone()[0] == 0


def test_a_flood_of_pin_requests_sends_a_handful_of_sms(world):
    merchant, adapter, owner = world
    codes = Counter(sqlstate(merchant, "select api.request_optin('acme', %s, 'gems', %s)", [VICTIM, f"flood-{n}"])
                    for n in range(300))
    sent = send_sms(adapter)
    assert codes == {None: 5, "CP035": 295}
    assert sent == 5 and checks_on(owner, VICTIM) == (0, 5, 0)


def test_a_merchant_has_an_hourly_budget_of_pins_per_carrier(world):
    merchant, _, owner = world
    owner.execute("update cp.carrier set rules_override = '{\"pin_requests_per_merchant_hour\": 20}' "
                  "where code = 'test_gb'")
    codes = Counter(sqlstate(merchant, "select api.request_optin('acme', %s, 'gems', %s)",
                             [f"+4477009{n:05d}", f"many-{n}"]) for n in range(30))
    assert codes == {None: 20, "CP036": 10}
    assert sqlstate(merchant, "select api.request_optin('acme', '+2348020000001', 'gems', 'ng')", []) is None


def odds_of_forging(rules: dict) -> Fraction:
    """Odds that guessing forges one number's opt-in within 30 days under these rules.

    Every check is counted before it is compared, and a number takes at most
    pin_failures_per_msisdn_30d wrong PINs in any 30 days, so an attacker gets at most that many
    guesses (the last allowed one may be right). Each guess faces a uniformly random PIN of
    pin_length digits, of which at most pin_max_attempts - 1 values were ruled out before (same
    opt-in): by the union bound the odds are at most guesses / (10^length - (attempts - 1)).
    """
    guesses = rules["pin_failures_per_msisdn_30d"]
    return Fraction(guesses, 10 ** rules["pin_length"] - (rules["pin_max_attempts"] - 1))


def test_the_configured_limits_keep_a_brute_force_within_one_in_ten_thousand(world):
    _, _, owner = world
    rules_of = {}
    for (code,) in owner.execute("select code from cp.regulation order by code").fetchall():
        # Each preset as a carrier under it sees it: the defaults, then the preset's own rules.
        owner.execute("update cp.carrier set regulation_code = %s where code = 'test_gb'", [code])
        rules_of[code] = owner.execute("select cp.effective_rules(carrier_id) from cp.carrier "
                                       "where code = 'test_gb'").fetchone()[0]
    assert {"DEFAULT", "EU", "GB", "ZA", "IN", "NG", "PK"} <= set(rules_of)
    for code, rules in rules_of.items():
        assert rules["pin_failures_per_msisdn_day"] <= rules["pin_failures_per_msisdn_30d"], code
        assert odds_of_forging(rules) <= Fraction(1, 10_000), (code, float(odds_of_forging(rules)))
    defaults = rules_of["DEFAULT"]
    assert float(odds_of_forging(defaults)) == pytest.approx(3.0e-5, rel=1e-3)
    # The same limits with 4-digit PINs would not hold: the check can fail.
    assert odds_of_forging(defaults | {"pin_length": 4}) > Fraction(1, 10_000)
