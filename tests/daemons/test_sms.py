"""SMS over HTTP: the GB two-stage opt-in reads its PIN off the simulated handset; receipts follow
every GB charge; the PIN never reaches carrier_log."""

from __future__ import annotations

import json
import re

import pytest
from harness import CARRIERS, MERCHANT, PRODUCT, World, msisdn


async def test_gb_one_time_purchase_with_pin_optin_and_receipt(db_url):
    async with World(db_url, carriers=["oneapi_gb"], gb_rules={}) as world:
        sim = world.sims["oneapi_gb"]
        number = msisdn("oneapi_gb", 301)
        sim.add_subscriber(number, 1_000)
        optin = await world.one("select api.request_optin(%s, %s, %s, 'o-1')", MERCHANT, number, PRODUCT)
        await world.wait_until("select bool_and(status = 'succeeded') from cp.procedure where kind = 'sms'")
        (text,) = sim.texts_to(number)
        pin = re.search(r"PIN for .* is (\d+)", text).group(1)
        confirmed = await world.one("select api.confirm_optin(%s, %s, %s)", MERCHANT, optin["id"], pin)
        assert confirmed["status"] == "confirmed"
        payment = await world.charge(number, "k-gb", {"optin_id": optin["id"]})
        assert await world.wait_status(payment) == "succeeded"
        await world.wait_until("select count(*) = 2 from cp.procedure where kind = 'sms' and status = 'succeeded'")
        assert len(sim.texts_to(number)) == 2 and sim.texts_to(number)[1].startswith("Receipt: you paid 3.00 GBP")
        logged = json.dumps([row[0] for row in await world.q("select to_jsonb(l) from cp.carrier_log l")])
        assert pin not in logged
        assert "Receipt: you paid" in logged  # only sensitive texts are hidden


@pytest.mark.parametrize("carrier", [c for c in CARRIERS if c != "oneapi_gb"])
async def test_pin_sms_reaches_the_handset_and_not_the_log(db_url, carrier):
    async with World(db_url, carriers=[carrier]) as world:
        sim = world.sims[carrier]
        number = msisdn(carrier, 302)
        sim.add_subscriber(number, 1_000)
        await world.one("select api.request_optin(%s, %s, %s, 'o-2')", MERCHANT, number, PRODUCT)
        await world.wait_until("select bool_and(status = 'succeeded') from cp.procedure where kind = 'sms'")
        (text,) = sim.texts_to(number)
        pin = re.search(r"is (\d+)\.", text).group(1)
        logged = json.dumps([row[0] for row in await world.q("select to_jsonb(l) from cp.carrier_log l")])
        assert pin not in logged
