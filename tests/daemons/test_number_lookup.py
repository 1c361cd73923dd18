"""Number portability: a number ported away keeps its old prefix; a number lookup (HLR/MNP) through the
carrier's `lookup` operation finds the network serving it now, and new purchases are billed there."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from harness import MERCHANT, World, msisdn
from psycopg.types.json import Jsonb

from carrierpay.adapters.lookup import lookup_number
from carrierpay.simulators.fleet import SECRETS

PORT_GB = {"code": "port_gb", "name": "Ported-to GB", "country": "GB", "mcc": "234", "mnc": "30", "currency": "GBP",
           "timezone": "Europe/London", "number_ranges": ["+4477008"], "regulation": "GB",
           "rules": {"optin_one_time": False}, "throughput": {"tps": 100}, "terms": {"carrier_share_bp": 3000},
           "operations": {"charge": {"pattern": "sync", "safe_to_repeat": True}}}


async def test_a_ported_number_is_billed_by_the_network_its_lookup_names(db_url):
    async with World(db_url, carriers=["oneapi_gb"]) as world:
        sim = world.sims["oneapi_gb"]
        await world.q("select admin.onboard_carrier(%s)", Jsonb(PORT_GB))
        await world.q("select admin.add_price_point(%s, 'gems', 'one_time', 300, 'GBP', 'gems_100', 'port_gb')",
                      MERCHANT)
        ported, stayed = msisdn("oneapi_gb", 801), msisdn("oneapi_gb", 802)
        sim.add_subscriber(stayed, 1_000)
        sim.port(ported, "234", "30")

        recorded = await lookup_number(db_url, "oneapi_gb", ported, secrets=SECRETS, base_url=sim.url)
        assert (recorded["carrier"], recorded["mcc"], recorded["mnc"]) == ("port_gb", "234", "30")
        assert (await world.one("select api.charge(%s, %s, 'gems', 'k-ported')", MERCHANT, ported))["carrier"] == \
            "port_gb"

        env = os.environ | SECRETS | {"CARRIERPAY_DATABASE_URL": db_url, "COLUMNS": "200"}
        # In a thread: the simulator answering it runs on this test's event loop.
        shown = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "carrierpay", "carrier", "lookup", "oneapi_gb", stayed,
                             "--base-url", sim.url], capture_output=True, text=True, env=env, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert "oneapi_gb" in shown.stdout
        payment = await world.charge(stayed, "k-stayed")
        assert await world.wait_status(payment) == "succeeded"
        assert sim.ledger.charged_total(stayed) == 300 and sim.ledger.charges(ported) == []
        assert [r["path"] for r in sim.received if "numberlookup" in r["path"]] == [
            f"/1/numberlookup/tel:{ported}", f"/1/numberlookup/tel:{stayed}"]
