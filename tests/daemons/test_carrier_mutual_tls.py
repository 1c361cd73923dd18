"""Mutual TLS through the whole platform: a carrier onboarded with `carrierpay carrier onboard` from
a folder whose spec names its CA bundle relative to carrier.yaml and its client certificate by
secrets, a OneAPI simulator behind HTTPS that demands a client certificate from the test CA, and
the adapter daemon charging it."""

from __future__ import annotations

import asyncio
import shutil
from datetime import timedelta

import psycopg
import yaml
from harness import CARRIERS, FINAL, MERCHANT, PRODUCT, msisdn
from typer.testing import CliRunner

from carrierpay.adapters.daemon import AdapterDaemon
from carrierpay.adapters.registry import connector_factory
from carrierpay.cli.main import app
from carrierpay.simulators import SimClock
from carrierpay.simulators.fleet import ONEAPI_GB_SECRETS, make_simulators, spec_for

GB = "oneapi_gb"
CLIENT = "carrierpay adapter"  # the client certificate's common name (tests/tls_kit.py)
CA_ONLY = {"ca_bundle": "certs/carrier-ca.pem"}
MUTUAL = {**CA_ONLY, "client_cert": {"secret": "ONEAPI_GB_CLIENT_CERT"},
          "client_key": {"secret": "ONEAPI_GB_CLIENT_KEY"}}


def onboard(db_url: str, folder, base_url: str, tls: dict) -> None:
    document = spec_for(GB, base_url, rules={"optin_one_time": False})  # no opt-in before each purchase
    document["tls"] = tls
    (folder / "carrier.yaml").write_text(yaml.safe_dump(document))
    result = CliRunner().invoke(app, ["carrier", "onboard", str(folder), "--database-url", db_url])
    assert result.exit_code == 0, result.output


async def run_daemon(db_url: str, secrets: dict) -> tuple[AdapterDaemon, asyncio.Event, asyncio.Task]:
    daemon = AdapterDaemon(db_url, connector_factory(secrets=secrets), poll_interval=0.05,
                           lease=timedelta(seconds=30))
    stop = asyncio.Event()
    return daemon, stop, asyncio.ensure_future(daemon.run(stop))


async def test_mutual_tls_carrier_charged_by_the_daemon_held_while_our_certificate_is_refused(
        db_url, tls_files, tmp_path):
    clock = SimClock()
    sim = make_simulators(clock, codes=[GB])[GB]
    sim.ssl_context = tls_files.server_context(require_client_cert=True)
    folder = tmp_path / GB
    (folder / "certs").mkdir(parents=True)
    shutil.copy(tls_files.ca, folder / "certs" / "carrier-ca.pem")
    secrets = {**ONEAPI_GB_SECRETS, "ONEAPI_GB_CLIENT_CERT": str(tls_files.client_cert),
               "ONEAPI_GB_CLIENT_KEY": str(tls_files.client_key)}
    _, currency, amount = CARRIERS[GB]
    async with sim, await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        async def one(sql: str, *params):
            return (await (await conn.execute(sql, params or None)).fetchone())[0]

        async def wait_for(sql: str, *params, timeout: float = 15.0):
            deadline = asyncio.get_running_loop().time() + timeout
            while not await one(sql, *params):
                assert asyncio.get_running_loop().time() < deadline, f"still false: {sql} {params}"
                await asyncio.sleep(0.05)

        # 1. Onboarded with the carrier's CA but no client certificate: the carrier refuses us.
        await asyncio.to_thread(onboard, db_url, folder, sim.url, CA_ONLY)
        assert await one("select spec->'tls'->>'ca_bundle' from cp.carrier where code = %s", GB) == \
            str((folder / "certs" / "carrier-ca.pem").resolve()), "the stored spec names the file absolutely"
        await conn.execute("select admin.set_clock(%s)", [clock.now()])
        await conn.execute("select admin.add_merchant(%s, 'Acme Games', null, 1000)", [MERCHANT])
        await conn.execute("select admin.add_product(%s, %s, '100 gems')", [MERCHANT, PRODUCT])
        await conn.execute("select admin.add_price_point(%s, %s, 'one_time', %s, %s, 'gems_100', %s)",
                           [MERCHANT, PRODUCT, amount, currency, GB])
        numbers = [msisdn(GB, 500 + n) for n in range(5)]
        for number in numbers:
            sim.add_subscriber(number, amount * 2)

        async def charge(n: int) -> int:
            document = await one("select api.charge(%s, %s, %s, %s)", MERCHANT, numbers[n], PRODUCT, f"mtls-{n}")
            return document["id"]

        daemon, stop, task = await run_daemon(db_url, secrets)
        first = await charge(0)
        # The TLS refusal meets the token request, before the charge: nothing reached the carrier,
        # so the same call is held on the queue, the payment stays in flight, no attempt is used up.
        await wait_for("select unreachable_since is not null from cp.carrier_call where procedure_id = %s", first)
        stop.set()
        await asyncio.wait_for(task, 10)
        assert await one("select status::text from cp.procedure where procedure_id = %s", first) == "in_flight"
        assert await one("select string_agg(status::text || ' ' || attempt, ',') from cp.carrier_call "
                         "where procedure_id = %s", first) == "queued 1"
        assert await one("select reason from cp.carrier_log where procedure_id = %s limit 1", first) == "unreachable"
        assert sim.received == [] and sim.ledger.transactions == []

        # 2. Onboarded again with the client certificate, but the daemon lacks the key: the carrier
        #    is skipped with the reason, and its held call is left alone.
        await asyncio.to_thread(onboard, db_url, folder, sim.url, MUTUAL)
        without_key = {name: value for name, value in secrets.items() if name != "ONEAPI_GB_CLIENT_KEY"}
        daemon, stop, task = await run_daemon(db_url, without_key)
        await clock_advance(conn, clock, timedelta(minutes=1))
        deadline = asyncio.get_running_loop().time() + 10
        while GB not in daemon.broken:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        assert "TlsConfigError" in daemon.broken[GB] and "tls.client_key" in daemon.broken[GB]
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(task, 10)
        assert await one("select count(*) from cp.carrier_call where procedure_id = %s", first) == 1
        assert sim.received == [] and sim.ledger.transactions == []

        # 3. With the certificate and key: the held call goes through, once, with its own correlator;
        #    later payments too, each request carrying our client certificate.
        daemon, stop, task = await run_daemon(db_url, secrets)
        try:
            payments = [first] + [await charge(n) for n in range(1, len(numbers))]
            await wait_for("select count(*) = %s from cp.procedure where procedure_id = any(%s) and status = any(%s)",
                           len(payments), payments, list(FINAL))
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
        statuses = await one("select array_agg(distinct status::text) from cp.procedure where procedure_id = any(%s)",
                             payments)
        assert statuses == ["succeeded"]
        correlator = await one("select correlator from cp.carrier_call where procedure_id = %s", first)
        assert len(sim.ledger.charges(correlator=correlator)) == 1
        assert sim.ledger.charged_total() == amount * len(numbers)
        receivable = await one(
            "select coalesce(sum(e.amount_minor), 0)::bigint from cp.ledger_entry e "
            "join cp.ledger_account a using (account_id) join cp.carrier k on k.carrier_id = a.carrier_id "
            "where a.kind = 'carrier_receivable' and k.code = %s", GB)
        assert receivable == sim.ledger.charged_total()
        assert sim.received and {request["client_cert"] for request in sim.received} == {CLIENT}


async def clock_advance(conn: psycopg.AsyncConnection, clock: SimClock, delta: timedelta) -> None:
    clock.advance(delta)
    await conn.execute("select admin.advance_clock(%s)", [delta])
