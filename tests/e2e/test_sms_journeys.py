"""SMS journeys end to end over TCP: the SMSC simulator, the adapter daemon with the SMPP bridge, a real
database. The simulated subscribers' handsets are the simulator's delivered texts; its ledger is the
carrier's truth that ours must match."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
import yaml
from psycopg.types.json import Jsonb

from carrierpay import queries
from carrierpay.adapters.daemon import AdapterDaemon
from carrierpay.adapters.smpp.bridge import smpp_connector_for
from carrierpay.paths import carriers_root
from carrierpay.simulators.smsc import SmscSimulator

PASSWORD = "s3cret"
RICH = "+27820000001"
BROKE = "+27820000002"
WEB = "+27820000003"
# Tuesday 10:00 in Johannesburg: outside the ZA quiet hours.
TUESDAY_10 = datetime.fromisoformat("2030-03-05T10:00:00+02:00")


@dataclass
class World:
    smsc: SmscSimulator
    conn: psycopg.AsyncConnection
    daemon: AdapterDaemon

    async def q(self, sql: str, *args) -> list[tuple]:
        cur = await self.conn.execute(sql, args)
        return await cur.fetchall()

    async def one(self, sql: str, *args):
        rows = await self.q(sql, *args)
        return rows[0][0] if rows else None

    async def until(self, predicate, timeout: float = 15.0, what: str = "condition") -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            result = predicate()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.02)

    async def text_like(self, msisdn: str, pattern: str) -> str:
        found: list[str] = []

        def seen() -> bool:
            found[:] = [t for t in self.smsc.texts_for(msisdn) if re.search(pattern, t)]
            return bool(found)

        await self.until(seen, what=f"an SMS to {msisdn} matching {pattern!r}")
        return found[-1]

    async def charge_status(self, msisdn: str) -> list[tuple]:
        return await self.q(
            "select p.status::text, p.reason, p.collected_minor from cp.procedure p join cp.subscriber s "
            "using (subscriber_id) where s.msisdn = %s and p.kind = 'charge' order by p.procedure_id", msisdn)

    async def settled_charges(self, msisdn: str, n: int = 1) -> list[tuple]:
        async def settled() -> bool:
            rows = await self.charge_status(msisdn)
            return len(rows) >= n and all(r[0] in ("succeeded", "failed") for r in rows)

        await self.until(settled, what=f"{n} settled charge(s) for {msisdn}")
        return await self.charge_status(msisdn)


@contextlib.asynccontextmanager
async def world(db_url: str, **sim):
    spec = yaml.safe_load((carriers_root() / "smsc_za" / "carrier.yaml").read_text())
    sim_kwargs = dict(system_id=spec["smpp"]["system_id"], password=PASSWORD, seed=3,
                      subscribers={RICH[1:]: 10_000, BROKE[1:]: 100, WEB[1:]: 10_000},
                      price_points={"33005": 500, "33010": 1000})
    sim_kwargs.update(sim)
    async with SmscSimulator(**sim_kwargs) as smsc:
        spec = copy.deepcopy(spec)
        spec["smpp"].update(port=smsc.port, reconnect_delay_s=0.05, reconnect_max_delay_s=0.2, response_timeout_s=5)
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            await conn.execute(queries.SET_CLOCK, {"at": TUESDAY_10})
            await conn.execute(queries.ONBOARD_CARRIER, {"spec": Jsonb(spec)})
            await conn.execute(queries.ADD_MERCHANT, {"code": "gamesco", "name": "GamesCo", "webhook_url": None,
                                                      "platform_fee_bp": 0})
            for code, name in (("club", "Gem club"), ("gems", "50 gems")):
                await conn.execute(queries.ADD_PRODUCT, {"merchant": "gamesco", "code": code, "name": name,
                                                         "retry_policy": "step_down", "retry_timing": "fixed"})
            for product, plan in (("club", "daily"), ("gems", "one_time")):
                await conn.execute(queries.ADD_PRICE_POINT, {
                    "merchant": "gamesco", "product": product, "plan": plan, "amount": 500, "currency": "ZAR",
                    "variant": f"{product}_500", "carrier": "smsc_za", "country": None})
            await conn.execute(queries.ADD_SMS_KEYWORD, {"carrier": "smsc_za", "short_code": "33001", "keyword": "GEMS",
                                                         "merchant": "gamesco", "product": "club", "plan": "daily"})

            async def factory(code: str, carrier_spec: dict):
                return await smpp_connector_for(code, carrier_spec, db_url, secrets={"SMSC_ZA_PASSWORD": PASSWORD})

            daemon = AdapterDaemon(db_url, factory, carriers=["smsc_za"], poll_interval=0.05, batch=50)
            stop = asyncio.Event()
            task = asyncio.create_task(daemon.run(stop))
            w = World(smsc, conn, daemon)
            try:
                await w.until(lambda: smsc.bound_sessions >= 1, what="the bridge to bind")
                yield w
            finally:
                stop.set()
                await asyncio.wait_for(task, 10)


async def test_keyword_subscription_with_double_optin_then_stop(db_url):
    async with world(db_url) as w:
        await w.smsc.inject_mo(RICH, "33001", "sub  gems")
        request = await w.text_like(RICH, r"Reply YES")
        assert "Gem club from GamesCo at R5.00/day" in request and "STOP GEMS to 33001" in request
        assert [m.short_code for m in w.smsc.messages_for(RICH)] == ["33001"]
        assert await w.one("select status::text from cp.subscription") == "pending_optin"
        assert w.smsc.charges_for(RICH) == []

        await w.smsc.inject_mo(RICH, "33001", "YES")
        assert await w.settled_charges(RICH) == [("succeeded", None, 500)]
        await w.text_like(RICH, r"^You are subscribed to Gem club")
        assert await w.one("select status::text from cp.subscription") == "active"
        assert await w.one("select method from cp.consent") == "mo"
        # The carrier's ledger and ours agree: one premium MT of R5.00 from the R5 short code.
        sim = w.smsc.charges_for(RICH)
        assert [(c["amount_minor"], c["short_code"]) for c in sim] == [(500, "33005")]
        ours = await w.q("select c.carrier_ref, p.collected_minor from cp.carrier_call c join cp.procedure p "
                         "using (procedure_id) where c.operation = 'charge' and c.status = 'done'")
        assert ours == [(sim[0]["message_id"], 500)]
        assert await w.one("select sum(amount_minor) from cp.ledger_entry") == 0

        await w.smsc.inject_mo(RICH, "33001", "STOP")
        await w.text_like(RICH, r"unsubscribed from Gem club")
        assert await w.q("select status::text, cancel_reason from cp.subscription") == [("cancelled", "sms_stop")]


async def test_duplicate_mo_has_one_effect(db_url):
    async with world(db_url) as w:
        await w.smsc.inject_mo(RICH, "33001", "SUB GEMS", duplicate=True)
        await w.text_like(RICH, r"Reply YES")
        assert await w.one("select count(*) from cp.mo_inbox") == 1
        assert await w.one("select count(*) from cp.subscription") == 1


async def test_premium_mt_purchases_settled_by_receipt(db_url):
    async with world(db_url, dlr_duplicates=True) as w:
        for msisdn, key in ((RICH, "buy-1"), (BROKE, "buy-2")):
            await w.conn.execute(queries.API_CHARGE, {"merchant": "gamesco", "msisdn": msisdn, "product": "gems",
                                                      "key": key, "amount": None, "metadata": Jsonb({})})
        assert await w.settled_charges(RICH) == [("succeeded", None, 500)]
        assert await w.settled_charges(BROKE) == [("failed", "insufficient_funds", 0)]
        assert [c["amount_minor"] for c in w.smsc.ledger] == [500]
        assert w.smsc.balance(RICH) == 9_500 and w.smsc.balance(BROKE) == 100
        collected = await w.one("select sum(collected_minor) from cp.procedure where kind = 'charge'")
        assert collected == sum(c["amount_minor"] for c in w.smsc.ledger)
        # Every receipt came twice; the second had no effect.
        assert await w.one("select count(*) from cp.journal") == 1


async def test_web_subscription_with_pin_by_sms(db_url):
    async with world(db_url) as w:
        cur = await w.conn.execute(queries.API_SUBSCRIBE, {"merchant": "gamesco", "msisdn": WEB, "product": "club",
                                                           "plan": "daily", "key": "web-1"})
        doc = (await cur.fetchone())[0]
        assert doc["status"] == "pending_optin"
        pin = re.search(r"PIN for Gem club \(subscription\) is (\d+)", await w.text_like(WEB, r"PIN")).group(1)
        cur = await w.conn.execute(queries.API_CONFIRM_OPTIN, {"merchant": "gamesco", "optin_id": doc["optin_id"],
                                                               "pin": pin})
        assert (await cur.fetchone())[0]["status"] == "confirmed"
        assert await w.settled_charges(WEB) == [("succeeded", None, 500)]
        assert len(w.smsc.charges_for(WEB)) == 1


async def test_receipt_held_by_quiet_hours_then_sent(db_url):
    async with world(db_url) as w:
        await w.conn.execute("update cp.carrier set rules_override = '{\"receipt_after_charge\": true}'")
        # Tuesday 21:00 local: marketing quiet hours (20:00-08:00) in South Africa.
        evening = TUESDAY_10 + timedelta(hours=11)
        await w.conn.execute(queries.SET_CLOCK, {"at": evening})
        await w.conn.execute(queries.API_CHARGE, {"merchant": "gamesco", "msisdn": RICH, "product": "gems",
                                                  "key": "late-1", "amount": None, "metadata": Jsonb({})})
        assert await w.settled_charges(RICH) == [("succeeded", None, 500)]
        receipt_at = await w.one("select q.available_at from cp.call_queue q join cp.carrier_call c using (call_id) "
                                 "where c.params->>'purpose' = 'receipt'")
        assert receipt_at == evening + timedelta(hours=11)  # Wednesday 08:00 local
        claimable = await w.one("select count(*) from cp.call_queue where available_at <= cp.clock_now()")
        assert claimable == 0
        # The daemon keeps polling; nothing more reaches the handset while the receipt is held.
        delivered = len(w.smsc.texts_for(RICH))
        await asyncio.sleep(0.3)
        assert len(w.smsc.texts_for(RICH)) == delivered
        assert not any(t.startswith("Receipt:") for t in w.smsc.texts_for(RICH))

        await w.conn.execute(queries.SET_CLOCK, {"at": evening + timedelta(hours=11, minutes=5)})
        receipt = await w.text_like(RICH, r"^Receipt: you paid 5\.00 ZAR to GamesCo for 50 gems")
        assert receipt


async def test_reconnect_after_the_smsc_drops_mid_window(db_url):
    async with world(db_url) as w:
        n = 30
        await w.conn.execute(
            "select cp.queue_sms((cp.lock_subscriber('+278200001' || lpad(i::text, 2, '0'), "
            "(select carrier_id from cp.carrier where code = 'smsc_za'))).subscriber_id, 'notice ' || i, 'notice') "
            "from generate_series(1, %s) i", [n])
        await w.until(lambda: len(w.smsc.delivered) >= 8, what="some messages to go out")
        # The SMSC takes (and delivers) the next few without answering, then the connection drops.
        w.smsc.hold_responses = True
        held_from = len(w.smsc.submits)
        await w.until(lambda: len(w.smsc.submits) >= held_from + 3, what="submits in flight")
        binds = w.smsc.binds
        w.smsc.drop_connections()
        w.smsc.hold_responses = False

        async def all_settled() -> bool:
            open_calls = await w.one("select count(*) from cp.carrier_call "
                                     "where status in ('queued', 'leased', 'awaiting_result')")
            return open_calls == 0

        await w.until(all_settled, timeout=30, what="every call to settle")
        assert w.smsc.binds > binds, "the bridge re-bound"
        delivered = [d.text for d in w.smsc.delivered]
        assert len(delivered) == len(set(delivered)), "no message went out twice"
        calls = {text: (status, ref) for text, status, ref in await w.q(
            "select params->>'text', status::text, carrier_ref from cp.carrier_call where operation = 'send_sms'")}
        assert len(calls) == n
        by_text = {d.text: d for d in w.smsc.delivered}
        for text, (status, ref) in calls.items():
            if status == "done":
                assert text in by_text and ref in by_text[text].message_ids, text
            elif status == "failed":
                assert text not in by_text, text  # never reached the SMSC
            else:
                assert status == "unknown", (text, status)
                if text in by_text:
                    # Accepted but its response was lost: the receipt waits in the inbox for matching.
                    ids = by_text[text].message_ids
                    assert await w.one("select count(*) from cp.callback_inbox where payload->>'carrier_ref' = any(%s)",
                                       ids) >= 1, text
        assert set(by_text) <= set(calls)
        assert any(status == "unknown" for status, _ in calls.values()), "some submits were in flight at the drop"
