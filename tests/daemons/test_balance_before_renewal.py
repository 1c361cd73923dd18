"""A balance query before a renewal that will likely fail, over real sockets: the scheduler queries
instead of charging where the carrier's terms make a failed charge cost more than a query, the
adapter daemon asks the simulated carrier, and only the subscriber whose balance covers the price is
charged; the other is neither charged nor stepped down."""

from __future__ import annotations

from harness import MERCHANT, World, msisdn

CARRIER = "aggregator_ng"
PRICE = 10_000

WORLD_SQL = (
    "select admin.add_product(%(merchant)s, 'club', 'Gem club', 'step_down', 'subscriber')",
    "select admin.add_price_point(%(merchant)s, 'club', 'daily', 10000, 'NGN', 'club_full', p_carrier => %(carrier)s)",
    "select admin.add_price_point(%(merchant)s, 'club', 'daily', 5000, 'NGN', 'club_half', p_carrier => %(carrier)s)",
    "update cp.carrier set spec = jsonb_set(spec, '{terms,call_costs}', '{\"charge_failed\": 4, \"balance\": 1}') "
    "where code = %(carrier)s",
    # the carrier's renewals mostly fail at every hour (5 of 100)
    "insert into cp.hour_stats (carrier_id, local_hour, attempts, successes) "
    "select c.carrier_id, h, 100, 5 from cp.carrier c cross join generate_series(0, 23) h where c.code = %(carrier)s",
)

# Two active daily subscriptions due now (as an activated subscription is, a period later).
SUBSCRIPTION_SQL = """
with b as (
    insert into cp.subscriber (msisdn, carrier_id)
    select %(msisdn)s, carrier_id from cp.carrier where code = %(carrier)s
    returning subscriber_id, carrier_id
)
insert into cp.subscription (merchant_id, subscriber_id, carrier_id, product_id, plan, status, price_point_id,
                             anchor_local, period_index, next_charge_at, paid_through, status_since)
select m.merchant_id, b.subscriber_id, b.carrier_id, p.product_id, 'daily', 'active', pp.price_point_id,
       (cp.clock_now() at time zone 'Africa/Lagos') - interval '1 day', 1, cp.clock_now(), cp.clock_now(),
       cp.clock_now()
from b
join cp.merchant m on m.code = %(merchant)s
join cp.product p on p.merchant_id = m.merchant_id and p.code = 'club'
join cp.price_point pp on pp.product_id = p.product_id and pp.variant = 'club_full'
returning subscription_id
"""


async def test_a_likely_failure_is_queried_and_only_a_covered_renewal_is_charged(db_url):
    async with World(db_url, carriers=[CARRIER]) as world:
        sim = world.sims[CARRIER]
        params = {"merchant": MERCHANT, "carrier": CARRIER}
        for statement in WORLD_SQL:
            await world.conn.execute(statement, params)
        rich, poor = msisdn(CARRIER, 301), msisdn(CARRIER, 302)
        sim.add_subscriber(rich, PRICE * 3)
        sim.add_subscriber(poor, PRICE // 4)
        subscriptions = {}
        for number in (rich, poor):
            cur = await world.conn.execute(SUBSCRIPTION_SQL, {**params, "msisdn": number})
            subscriptions[number] = (await cur.fetchone())[0]

        assert await world.one("select sched.run_due(100)") == 2
        assert await world.one("select count(*) from cp.procedure where kind = 'balance_check' "
                               "and subscription_id is not null") == 2
        # the daemon asks the carrier; the rich renewal becomes due at once, the poor one later
        await world.wait_until("select count(*) = 2 from cp.procedure where kind = 'balance_check' "
                               "and status = 'succeeded'")
        assert await world.one("select sched.run_due(100)") == 1
        charge = await world.one("select procedure_id from cp.procedure where kind = 'charge' "
                                 "and subscription_id = %s", subscriptions[rich])
        assert await world.wait_status(charge) == "succeeded"

        assert sim.ledger.charged_total(rich) == PRICE
        assert sim.ledger.charges(poor) == []
        assert await world.one("select count(*) from cp.procedure where kind = 'charge' "
                               "and subscription_id = %s", subscriptions[poor]) == 0
        poor_state = await world.q(
            "select retry_level, next_charge_at > cp.clock_now(), attempts_today from cp.subscription "
            "where subscription_id = %s", subscriptions[poor])
        assert poor_state == [(0, True, 0)]
        assert await world.one("select period_index from cp.subscription where subscription_id = %s",
                               subscriptions[rich]) == 2
        # the queries are carrier calls like any other
        assert await world.one("select count(*) from cp.carrier_call where operation = 'balance'") == 2
