"""An attacker who can reach the callback server, and a carrier whose answers contradict what we hold.

Raw HTTP to a running callback server: forged, unsigned and replayed callbacks; a spec that
authenticates callbacks by source address only; a genuine callback for a charge that was never
sent; callbacks that contradict a settled charge. None of them may move money.
"""

from __future__ import annotations

import copy
from pathlib import Path

import psycopg
import pytest
import yaml
from psycopg.types.json import Jsonb
from typer.testing import CliRunner

from carrierpay.adapters.callback_server import server_ssl_context
from carrierpay.adapters.spec import CREDENTIAL_CHECKS, SpecError, load_spec
from carrierpay.cli.main import app
from carrierpay.paths import carriers_root
from tests.security.callback_kit import (
    BEARER,
    BEARER_NG,
    HMAC_RAW_BODY,
    JSON_NG,
    MTLS_NG,
    MUTUAL_TLS,
    NG,
    PRICE,
    TOKEN,
    CallbackWorld,
    aggregator_spec,
    form_fields,
    hmac_header,
    json_body,
    json_spec,
    post_form,
    post_json,
    send_raw,
    sign_form,
)

REPO = Path(__file__).resolve().parents[2]
PATH = f"/callbacks/{NG}"


def ip_only(spec: dict) -> dict:
    spec = copy.deepcopy(spec)
    spec["callbacks"]["auth"] = [{"type": "ip_allow_list", "cidrs": ["127.0.0.0/8"]}]
    return spec


@pytest.mark.parametrize("auth", [None, [], [{"type": "ip_allow_list", "cidrs": ["127.0.0.0/8"]}]],
                         ids=["no auth", "empty auth", "ip allow-list only"])
def test_carrier_check_refuses_callbacks_without_a_credential_check(tmp_path, auth):
    spec = aggregator_spec()
    if auth is None:
        spec["callbacks"].pop("auth")
    else:
        spec["callbacks"]["auth"] = auth
    path = tmp_path / "carrier.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["carrier", "check", str(path), "--offline"])
    assert result.exit_code == 1, result.output
    assert "callbacks.auth" in result.output and "credential check" in result.output
    assert "Traceback" not in result.output


def test_onboarding_refuses_callbacks_without_a_credential_check_and_takes_every_shipped_spec(db_url):
    with psycopg.connect(db_url, autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as refused:
            conn.execute("select admin.onboard_carrier(%s)", [Jsonb(ip_only(aggregator_spec()))])
        assert refused.value.sqlstate == "CP090"
        assert "credential check" in str(refused.value)
        assert conn.execute("select count(*) from cp.carrier").fetchone()[0] == 0

        # The carriers we ship (the demo runs them) and the specs the tests use keep a credential check.
        paths = sorted(carriers_root().glob("*/carrier.yaml")) + sorted((REPO / "tests").rglob("*.yaml"))
        with_callbacks = 0
        for path in paths:
            data = yaml.safe_load(path.read_text())
            if not isinstance(data, dict) or "callbacks" not in data:
                continue
            with_callbacks += 1
            spec = load_spec(path)
            assert {check["type"] for check in data["callbacks"]["auth"]} & CREDENTIAL_CHECKS, path
            conn.execute("select admin.onboard_carrier(%s)", [Jsonb(spec.stored_document())])
        assert with_callbacks >= 1


async def test_an_ip_allow_list_alone_lets_no_callback_through(db_url):
    """A spec stored before the rule existed, trusting 127.0.0.0/8: an unsigned callback from that
    very address must settle nothing."""
    async with CallbackWorld(db_url) as world:
        payment, correlator = await world.charge(NG, 1)
        assert await world.send(NG) == 1
        before = await world.state(payment)
        await world.conn.execute("update cp.carrier set spec = %s where code = %s", [Jsonb(ip_only(aggregator_spec())),
                                                                                     NG])
        unsigned = {k: v for k, v in form_fields(correlator).items() if k != "sig"}
        status, _ = await send_raw(world.port, post_form(PATH, unsigned))
        assert status in (403, 404)
        assert await world.state(payment) == before
        assert await world.one("select count(*) from cp.callback_inbox") == 0


async def test_forged_unsigned_and_tampered_callbacks_are_refused_before_they_are_read(db_url):
    async with CallbackWorld(db_url, specs=[aggregator_spec(), json_spec(JSON_NG, HMAC_RAW_BODY)]) as world:
        payment, correlator = await world.charge(NG, 2)
        json_payment, json_correlator = await world.charge(JSON_NG, 2)
        assert await world.send(NG) == 1 and await world.send(JSON_NG) == 1
        before = {payment: await world.state(payment), json_payment: await world.state(json_payment)}
        assert before[payment]["payment"] == "in_flight" and before[payment]["call"] == "leased"
        genuine = form_fields(correlator)
        body, json_path = json_body(json_correlator), f"/callbacks/{JSON_NG}"
        deep = b'{"reference": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        attacks = {
            "unsigned": post_form(PATH, {k: v for k, v in genuine.items() if k != "sig"}),
            "zero signature": post_form(PATH, {**genuine, "sig": "0" * 32}),
            "signed with another key": post_form(PATH, sign_form(genuine, "guessed-secret")),
            "price lowered after signing": post_form(PATH, {**genuine, "price": "1.00"}),
            "signature cut short": post_form(PATH, {**genuine, "sig": genuine["sig"][:-1]}),
            "unsigned JSON": post_json(json_path, body),
            "JSON signed with another key": post_json(json_path, body, hmac_header(body, "guessed-secret")),
            # The signature is over the bytes: whitespace is not ours to normalise.
            "JSON with a space added after signing": post_json(json_path, body + b" ", hmac_header(body)),
            # Never parsed, since it is not signed: refused, not a crash of the JSON parser.
            "unsigned JSON nested 100,000 deep": post_json(json_path, deep),
        }
        for name, request in attacks.items():
            status, _ = await send_raw(world.port, request)
            assert status == 403, name
        assert world.server.counts["rejected"] == len(attacks)
        # GET with the same fields in the query string: the spec allows POST only.
        status, _ = await send_raw(world.port, f"GET {PATH}?reference={correlator}&status=ok HTTP/1.1\r\n"
                                               "Host: x\r\nConnection: close\r\n\r\n".encode())
        assert status in (400, 403)
        assert {p: await world.state(p) for p in before} == before
        assert await world.one("select count(*) from cp.callback_inbox") == 0

        for request in (post_form(PATH, genuine), post_json(json_path, body, hmac_header(body))):
            status, _ = await send_raw(world.port, request)
            assert status == 200
        for settled in (payment, json_payment):
            after = await world.state(settled)
            assert (after["payment"], after["collected"], after["journals"]) == ("succeeded", PRICE, 1)


async def test_a_genuine_callback_for_a_charge_still_queued_settles_nothing(db_url):
    """The call was never handed to the carrier, so no result can be true of it: not even one
    signed with the right key. The payment stays pending and the call stays queued, to be sent."""
    async with CallbackWorld(db_url) as world:
        payment, correlator = await world.charge(NG, 3)
        before = await world.state(payment)
        assert (before["payment"], before["call"], before["in_queue"]) == ("pending", "queued", True)
        status, _ = await send_raw(world.port, post_form(PATH, form_fields(correlator)))
        assert status == 200  # recorded, as a conflict: the carrier need not retry
        assert await world.state(payment) == before
        assert await world.ledger_total() == 0
        assert await world.conflicts(payment) == [("not_sent", "queued", "succeeded")]
        assert world.server.counts["not_sent"] == 1

        # Sent now; the carrier's callback (the same one, again) settles it once.
        assert await world.send(NG) == 1
        status, _ = await send_raw(world.port, post_form(PATH, form_fields(correlator)))
        assert status == 200
        after = await world.state(payment)
        assert (after["payment"], after["collected"], after["journals"], after["in_queue"]) == \
            ("succeeded", PRICE, 1, False)


async def test_callbacks_contradicting_a_settled_charge_are_conflicts_and_move_no_money(db_url):
    async with CallbackWorld(db_url) as world:
        payment, correlator = await world.charge(NG, 4)
        await world.send(NG)
        status, _ = await send_raw(world.port, post_form(PATH, form_fields(correlator)))
        assert status == 200
        settled = await world.state(payment)
        ledger = await world.ledger_total()
        assert (settled["payment"], settled["collected"], settled["journals"]) == ("succeeded", PRICE, 1)

        contradictions = [
            form_fields(correlator, status="failed", code="NO_FUNDS", message_id="NG-TX-9"),  # failed after all
            form_fields(correlator, price="1000.00", message_id="NG-TX-8"),  # succeeded, for ten times as much
        ]
        for fields in contradictions:
            status, _ = await send_raw(world.port, post_form(PATH, fields))
            assert status == 200
        assert await world.state(payment) == settled
        assert await world.ledger_total() == ledger
        assert await world.conflicts(payment) == [("outcome", "done", "failed"), ("amount", "done", "succeeded")]
        events = await world.one("select count(*) from cp.event where kind = 'outcome_conflict'")
        assert events == 2


async def test_a_callback_in_another_currency_settles_nothing(db_url):
    async with CallbackWorld(db_url) as world:
        payment, correlator = await world.charge(NG, 5)
        await world.send(NG)
        before = await world.state(payment)
        status, _ = await send_raw(world.port, post_form(PATH, form_fields(correlator, currency="USD")))
        assert status == 200
        assert await world.state(payment) == before
        assert await world.ledger_total() == 0
        assert await world.conflicts(payment) == [("currency", "leased", "succeeded")]


async def test_a_bearer_credential_we_handed_the_carrier(db_url):
    async with CallbackWorld(db_url, specs=[json_spec(BEARER_NG, BEARER)]) as world:
        payment, correlator = await world.charge(BEARER_NG, 7)
        await world.send(BEARER_NG)
        before = await world.state(payment)
        body, path = json_body(correlator), f"/callbacks/{BEARER_NG}"
        for headers in ({}, {"Authorization": "Bearer wrong-token"}, {"Authorization": TOKEN},
                        {"Authorization": f"Basic {TOKEN}"}, {"X-Token": TOKEN}):
            status, _ = await send_raw(world.port, post_json(path, body, headers))
            assert status == 403, headers
        assert await world.state(payment) == before
        status, _ = await send_raw(world.port, post_json(path, body, {"Authorization": f"Bearer {TOKEN}"}))
        assert status == 200
        assert (await world.state(payment))["payment"] == "succeeded"


async def test_mutual_tls_callbacks_need_the_carriers_client_certificate(db_url, tls_files):
    context = server_ssl_context(str(tls_files.server_cert), str(tls_files.server_key), str(tls_files.ca))
    async with CallbackWorld(db_url, specs=[json_spec(MTLS_NG, MUTUAL_TLS)], ssl_context=context) as world:
        payment, correlator = await world.charge(MTLS_NG, 8)
        await world.send(MTLS_NG)
        before = await world.state(payment)
        request = post_json(f"/callbacks/{MTLS_NG}", json_body(correlator))
        status, _ = await send_raw(world.port, request, ssl_context=tls_files.client_context())
        assert status == 403  # TLS without a client certificate proves nothing about the sender
        assert await world.state(payment) == before
        status, _ = await send_raw(world.port, request, ssl_context=tls_files.client_context(with_client_cert=True))
        assert status == 200
        assert (await world.state(payment))["payment"] == "succeeded"


@pytest.mark.parametrize("check", [
    {"type": "signature", "field": "sig", "algorithm": "md5", "canonical": "sorted_pairs",
     "key": {"secret": "AGGREGATOR_NG_CALLBACK_SECRET"}},
    {"type": "signature", "header": "X-Sig", "algorithm": "md5", "canonical": "sorted_values",
     "key": {"secret": "AGGREGATOR_NG_CALLBACK_SECRET"}},
    {"type": "signature", "header": "X-Sig", "algorithm": "hmac_sha256", "canonical": "template",
     "template": "{{ params.reference }}", "key": {"secret": "AGGREGATOR_NG_CALLBACK_SECRET"}},
], ids=["field", "sorted values", "template over params"])
def test_json_callbacks_cannot_be_signed_over_parsed_fields(check):
    """Those signatures would need the JSON parsed before it is authenticated."""
    with pytest.raises(SpecError) as refused:
        load_spec(json_spec(JSON_NG, [check]))
    assert "callbacks.auth[0]" in str(refused.value) and "before its body is read" in str(refused.value)
