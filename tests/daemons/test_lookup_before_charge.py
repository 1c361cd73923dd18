"""Number portability on the charge path, over real sockets: a range whose carrier says so
(`operations.lookup.before_charge`) holds a purchase until the number lookup answers, and the charge goes
to the network the answer names, once; a fresh cached answer skips the lookup, an expired one asks again,
and a lookup that times out falls back to the number's range."""

from __future__ import annotations

import contextlib
from datetime import timedelta

from harness import MERCHANT, World, msisdn
from psycopg.types.json import Jsonb

from carrierpay.simulators.fleet import ONEAPI_GB_SECRETS, spec_for
from carrierpay.simulators.oneapi import OneApiSimulator


def lookups(sim: OneApiSimulator, number: str) -> int:
    return sum(1 for request in sim.received if request["path"] == f"/1/numberlookup/tel:{number}")


async def test_a_ported_number_is_looked_up_before_its_charge_and_charged_where_it_went(db_url):
    async with contextlib.AsyncExitStack() as stack:
        world = await stack.enter_async_context(World(db_url, carriers=["oneapi_gb"], adapters=False))
        home = world.sims["oneapi_gb"]
        away = await stack.enter_async_context(OneApiSimulator(
            client_id=ONEAPI_GB_SECRETS["ONEAPI_GB_CLIENT_ID"],
            client_secret=ONEAPI_GB_SECRETS["ONEAPI_GB_CLIENT_SECRET"], clock=world.clock, seed=8))
        # oneapi_gb asks who serves a number of its range before charging it; port_gb is the network
        # (234/30) its ported numbers went to, a second OneAPI operator.
        asks = world.specs["oneapi_gb"]
        asks["operations"]["lookup"].update(before_charge=True, ttl_s=3600)
        await world.q("select admin.onboard_carrier(%s)", Jsonb(asks))
        went = spec_for("oneapi_gb", away.url, rules={"optin_one_time": False}, timeout_s=2.0)
        went.update(code="port_gb", name="Ported-to GB", mnc="30", number_ranges=["+4477008"])
        went.pop("mo", None)
        await world.q("select admin.onboard_carrier(%s)", Jsonb(went))
        await world.q("select admin.add_price_point(%s, 'gems', 'one_time', 300, 'GBP', 'gems_100', 'port_gb')",
                      MERCHANT)
        ported, stayed, unlooked = msisdn("oneapi_gb", 901), msisdn("oneapi_gb", 902), msisdn("oneapi_gb", 903)
        home.port(ported, "234", "30")
        away.add_subscriber(ported, 10_000)
        home.add_subscriber(stayed, 10_000)
        home.add_subscriber(unlooked, 10_000)
        world.start_adapters()

        async def carrier_of(payment: int) -> str:
            return await world.one("select k.code from cp.procedure p join cp.carrier k using (carrier_id) "
                                   "where p.procedure_id = %s", payment)

        first = await world.charge(ported, "k-ported-1")
        assert await world.wait_status(first) == "succeeded"
        assert await carrier_of(first) == "port_gb"
        assert away.ledger.charged_total(ported) == 300 and home.ledger.charges(ported) == []
        assert lookups(home, ported) == 1

        again = await world.charge(ported, "k-ported-2")  # a fresh cached answer: no lookup
        assert await world.wait_status(again) == "succeeded"
        assert (await carrier_of(again), lookups(home, ported)) == ("port_gb", 1)

        await world.advance(timedelta(hours=2))  # the answer (ttl_s 3600) has expired: asked again
        later = await world.charge(ported, "k-ported-3")
        assert await world.wait_status(later) == "succeeded"
        assert (await carrier_of(later), lookups(home, ported)) == ("port_gb", 2)
        assert away.ledger.charged_total(ported) == 900 and home.ledger.charges(ported) == []

        stays = await world.charge(stayed, "k-stayed")  # not ported: the lookup names the range's own network
        assert await world.wait_status(stays) == "succeeded"
        assert (await carrier_of(stays), lookups(home, stayed)) == ("oneapi_gb", 1)
        assert home.ledger.charged_total(stayed) == 300

        home.faults.hold("lookup")  # the HLR does not answer: the lookup times out, the range routes it
        fallback = await world.charge(unlooked, "k-timeout")
        assert await world.wait_status(fallback) == "succeeded"
        home.faults.release("lookup")
        assert (await carrier_of(fallback), home.ledger.charged_total(unlooked)) == ("oneapi_gb", 300)
        assert await world.one("select payload->>'carrier' from cp.event where aggregate_type = 'procedure' "
                               "and aggregate_id = %s and kind = 'lookup_fallback'", fallback) == "oneapi_gb"
        # Each purchase was charged once, at one carrier.
        assert await world.one("select count(*) from cp.carrier_call where operation = 'charge'") == 5
        assert len(away.ledger.charges()) + len(home.ledger.charges()) == 5
