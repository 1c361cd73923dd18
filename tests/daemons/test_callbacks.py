"""The callback server with the aggregator: early, duplicate, late and forged callbacks, and HTTPS."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import aiohttp
from harness import CARRIERS, SECRETS, World

NG = "aggregator_ng"
AMOUNT = CARRIERS[NG][2]


async def journals(world: World, payment: int) -> int:
    return await world.one("select count(*) from cp.journal where procedure_id = %s", payment)


async def test_early_and_duplicate_callbacks_settle_the_charge_once(db_url):
    async with World(db_url, carriers=[NG]) as world:
        sim = world.sims[NG]
        sim.callback_before_response = True  # the result arrives before the "accepted" answer
        sim.callback_duplicates = 3
        number = world.subscriber(NG, 201, AMOUNT * 2)
        payment = await world.charge(number, "k-early")
        assert await world.wait_status(payment) == "succeeded"
        # the callback, then the synchronous "accepted" (a no-op on a settled call)
        await world.wait_until("select count(*) >= 2 from cp.carrier_log where procedure_id = %s", payment)
        for _ in range(100):
            if world.callbacks.counts["duplicate"] >= 3:
                break
            await asyncio.sleep(0.05)
        assert world.callbacks.counts["duplicate"] == 3
        assert await journals(world, payment) == 1
        assert len(sim.ledger.charges(number)) == 1
        assert await world.one("select status::text from cp.carrier_call where procedure_id = %s", payment) == "done"
        assert await world.receivable(NG) == AMOUNT


async def test_forged_callback_is_refused_and_changes_nothing_then_the_real_one_settles(db_url):
    async with World(db_url, carriers=[NG]) as world:
        sim = world.sims[NG]
        sim.callback_attempts = 0  # hold the real callback back
        number = world.subscriber(NG, 202, AMOUNT * 2)
        payment = await world.charge(number, "k-forged")
        correlator = await world.awaiting_result(payment)
        forged = sim.callback_fields(sim.billing.lookup(correlator))
        forged["status"], forged["sig"] = "ok", "0" * 32
        url = world.callbacks.callback_url(NG)
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=forged) as answer:
                assert answer.status == 403
            async with http.post(url, data="garbage=1") as answer:
                assert answer.status in (400, 403)
            async with http.post(world.callbacks.callback_url("nobody"), data=forged) as answer:
                assert answer.status == 404
        assert await world.one("select count(*) from cp.callback_inbox") == 0
        assert await world.status(payment) == "in_flight"
        assert world.callbacks.counts["rejected"] >= 1

        await sim.send_late_callback(correlator)  # the genuine, late callback
        assert await world.wait_status(payment) == "succeeded"
        await sim.send_late_callback(correlator)  # and once more, later still
        assert await journals(world, payment) == 1
        assert await world.receivable(NG) == AMOUNT


async def test_a_failed_result_by_callback_fails_the_payment(db_url):
    async with World(db_url, carriers=[NG]) as world:
        number = world.subscriber(NG, 203, 1)
        payment = await world.charge(number, "k-nofunds")
        assert await world.wait_status(payment) == "failed"
        assert await world.one("select reason from cp.procedure where procedure_id = %s", payment) == \
            "insufficient_funds"
        assert await journals(world, payment) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_callbacks_over_https_settle_and_plain_http_to_the_https_port_changes_nothing(db_url, tls_files,
                                                                                             tmp_path):
    """`carrierpay callbacks serve --cert --key` as its own process, with a certificate from the test
    CA: a signed callback posted over HTTPS (by a client trusting that CA) settles the payment; the
    same callback in plain HTTP to that port, and a forged one over HTTPS, change nothing."""
    repo = Path(__file__).resolve().parents[2]
    log_path = tmp_path / "callbacks.log"
    async with World(db_url, carriers=[NG]) as world:
        sim = world.sims[NG]
        sim.callback_attempts = 0  # the carrier's own callback goes nowhere: the test delivers it
        number = world.subscriber(NG, 204, AMOUNT * 2)
        payment = await world.charge(number, "k-https")
        correlator = await world.awaiting_result(payment)
        genuine = sim.callback_fields(sim.billing.lookup(correlator))
        forged = {**genuine, "sig": "0" * 32}

        port = free_port()
        log = log_path.open("wb")
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "carrierpay", "callbacks", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--cert", str(tls_files.server_cert), "--key", str(tls_files.server_key), "--database-url", db_url,
            env={**os.environ, **SECRETS, "PYTHONPATH": str(repo)}, stdout=log, stderr=log, cwd=str(repo))
        https, plain = f"https://127.0.0.1:{port}", f"http://127.0.0.1:{port}"
        trusting = tls_files.client_context()
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
                deadline = asyncio.get_running_loop().time() + 20
                while True:
                    try:
                        async with http.get(f"{https}/health", ssl=trusting) as answer:
                            if answer.status == 200:
                                break
                    except aiohttp.ClientConnectorError:
                        pass
                    assert server.returncode is None, log_path.read_text()
                    assert asyncio.get_running_loop().time() < deadline, log_path.read_text()
                    await asyncio.sleep(0.1)

                # Plain HTTP to the HTTPS port: no TLS handshake, so no request is ever read.
                plain_status = None
                try:
                    async with http.post(f"{plain}/callbacks/{NG}", data=genuine) as answer:
                        plain_status = answer.status
                except aiohttp.ClientError:
                    pass
                assert plain_status != 200
                # A client that does not trust our CA refuses the server before sending anything.
                try:
                    async with http.post(f"{https}/callbacks/{NG}", data=genuine) as answer:
                        raise AssertionError(f"an untrusted server certificate was accepted: {answer.status}")
                except aiohttp.ClientConnectorCertificateError:
                    pass
                async with http.post(f"{https}/callbacks/{NG}", data=forged, ssl=trusting) as answer:
                    assert answer.status == 403  # TLS does not replace the callback's own signature
                assert await world.one("select count(*) from cp.callback_inbox") == 0
                assert await world.status(payment) == "in_flight"
                assert await journals(world, payment) == 0

                async with http.post(f"{https}/callbacks/{NG}", data=genuine, ssl=trusting) as answer:
                    assert answer.status == 200
                assert await world.status(payment) == "succeeded"  # recorded before the 200
                async with http.post(f"{https}/callbacks/{NG}", data=genuine, ssl=trusting) as answer:
                    assert answer.status == 200  # a duplicate, recorded once
        finally:
            server.terminate()
            await asyncio.wait_for(server.wait(), 10)
            log.close()
        assert server.returncode == 0, log_path.read_text()
        assert await world.one("select count(*) from cp.callback_inbox") == 1
        assert await journals(world, payment) == 1
        assert len(sim.ledger.charges(number)) == 1
        assert await world.receivable(NG) == AMOUNT == sim.ledger.charged_total()
        assert "Traceback" not in log_path.read_text()
        assert "listening on https://" in log_path.read_text()
