"""Subscribers on HTTP carriers text the short code: the carrier forwards each MO to our callback server
(`/mo/<carrier>`, the spec's `mo` section), which authenticates it and hands it to the same
`adapter.record_mo` as SMPP. SUB, YES, STOP and BUY end to end on the NG aggregator; HELP on OneAPI."""

from __future__ import annotations

import re

from harness import MERCHANT, PRODUCT, World, msisdn

SHORT_CODE = "33001"


async def subscription_status(world: World, number: str) -> str | None:
    return await world.one("select s.status::text from cp.subscription s join cp.subscriber u using (subscriber_id) "
                           "where u.msisdn = %s order by s.subscription_id desc limit 1", number)


async def test_sub_yes_stop_and_buy_by_sms_on_an_http_aggregator(db_url):
    async with World(db_url, carriers=["aggregator_ng"]) as world:
        sim = world.sims["aggregator_ng"]
        sim.mo_url = f"{world.callbacks.base_url}/mo/aggregator_ng"
        await world.q("select admin.add_price_point(%s, %s, 'daily', 5000, 'NGN', 'gems_daily', 'aggregator_ng')",
                      MERCHANT, PRODUCT)
        await world.q("select admin.add_sms_keyword('aggregator_ng', %s, 'GEMS', %s, %s, 'daily')",
                      SHORT_CODE, MERCHANT, PRODUCT)
        number = msisdn("aggregator_ng", 601)
        sim.add_subscriber(number, 100_000)

        assert await sim.send_mo(number, "SUB GEMS", SHORT_CODE) == 200
        assert await subscription_status(world, number) == "pending_optin"
        await world.wait_until("select count(*) = 1 from cp.procedure where kind = 'sms' and status = 'succeeded'")
        assert re.search(r"YES", sim.texts_to(number)[-1])  # NG: the double confirmation asks for YES

        assert await sim.send_mo(number, "yes", SHORT_CODE) == 200
        assert await subscription_status(world, number) == "active"
        await world.wait_until("select bool_and(status = 'succeeded') from cp.procedure where kind = 'charge'")
        assert sim.ledger.charged_total(number) == 5000

        assert await sim.send_mo(number, "STOP", SHORT_CODE) == 200
        assert await subscription_status(world, number) == "cancelled"

        assert await sim.send_mo(number, "BUY GEMS", SHORT_CODE) == 200  # a one-time purchase by SMS
        await world.wait_until("select count(*) = 2 from cp.procedure where kind = 'charge' and status = 'succeeded'")
        assert sim.ledger.charged_total(number) == 5000 + 10_000
        assert await world.one("select count(*) from cp.mo_inbox") == 4


async def test_a_forged_or_replayed_mo_changes_nothing(db_url):
    async with World(db_url, carriers=["aggregator_ng"]) as world:
        sim = world.sims["aggregator_ng"]
        target = f"{world.callbacks.base_url}/mo/aggregator_ng"
        number = msisdn("aggregator_ng", 602)
        genuine = sim.callback_secret
        sim.callback_secret = "guessed-secret"  # whoever signs without the aggregator's key
        assert await sim.send_mo(number, "STOP ALL", SHORT_CODE, target=target) == 403
        sim.callback_secret = genuine
        assert await world.one("select count(*) from cp.mo_inbox") == 0
        assert await sim.send_mo(number, "HELP", SHORT_CODE, target=target) == 200
        await sim._post(target, sim.callbacks_sent[-1]["fields"])  # the aggregator's retry of the same MO
        assert await world.one("select count(*) from cp.mo_inbox") == 1


async def test_help_by_sms_on_oneapi_reaches_the_handset(db_url):
    async with World(db_url, carriers=["oneapi_gb"]) as world:
        sim = world.sims["oneapi_gb"]
        sim.mo_url = f"{world.callbacks.base_url}/mo/oneapi_gb"
        number = msisdn("oneapi_gb", 603)
        sim.add_subscriber(number, 1_000)
        assert await sim.send_mo(number, "HELP", "84433") == 200
        await world.wait_until("select count(*) = 1 from cp.procedure where kind = 'sms' and status = 'succeeded'")
        assert sim.texts_to(number)  # the HELP answer went back over the carrier's SMS API
        sim.mo_password = "not-the-agreed-password"
        assert await sim.send_mo(number, "STOP", "84433") == 403
        assert await world.one("select count(*) from cp.mo_inbox") == 1
