"""An attacker who can reach the callback server's MO endpoint (`/mo/<carrier>`): a forged STOP would
cancel someone's subscription, a forged YES or BUY would consent or buy for them. Raw HTTP against a
running server; only an MO the carrier signed is recorded, and once."""

from __future__ import annotations

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.security.callback_kit import (
    HMAC_RAW_BODY,
    JSON_NG,
    NG,
    CallbackWorld,
    aggregator_spec,
    http_request,
    json_spec,
    post_form,
    send_raw,
    sign_form,
)

PATH = f"/mo/{NG}"


def mo_fields(text: str, mo_id: str = "MO-1") -> dict[str, str]:
    return {"mo_id": mo_id, "sender": "2348035550001", "shortcode": "33001", "text": text,
            "received_at": "2030-03-04T12:00:00Z"}


async def test_forged_unsigned_and_replayed_mo_messages_change_nothing(db_url):
    async with CallbackWorld(db_url, specs=[aggregator_spec(), json_spec(JSON_NG, HMAC_RAW_BODY)]) as world:
        await world.conn.execute("update cp.carrier set spec = spec - 'mo' where code = %s", [JSON_NG])
        # A spec whose MO section checks nothing but the source address is refused where it is stored.
        unchecked = {**aggregator_spec(), "mo": {**aggregator_spec()["mo"],
                                                 "auth": [{"type": "ip_allow_list", "cidrs": ["127.0.0.0/8"]}]}}
        with pytest.raises(psycopg.Error, match="mo.auth needs a credential check"):
            await world.conn.execute("select admin.onboard_carrier(%s)", [Jsonb(unchecked)])
        attempts = [
            post_form(PATH, mo_fields("STOP ALL")),  # unsigned
            post_form(PATH, sign_form(mo_fields("STOP ALL"), secret="guessed-secret")),  # signed with a guess
            post_form(PATH, {**sign_form(mo_fields("HELP")), "text": "STOP ALL"}),  # signed, then altered
            http_request("GET", PATH + "?text=STOP"),  # a method the spec does not use
        ]
        for request in attempts:
            status, _ = await send_raw(world.port, request)
            assert status in (400, 403), status
        for path in (f"/mo/{JSON_NG}", "/mo/no_such_carrier", "/mo/..%2Fcallbacks"):  # no MO section; unknown
            status, _ = await send_raw(world.port, post_form(path, sign_form(mo_fields("STOP ALL"))))
            assert status == 404, (path, status)
        assert await world.one("select count(*) from cp.mo_inbox") == 0

        genuine = sign_form(mo_fields("HELP"))
        for _ in range(3):  # the carrier's retries of one MO
            status, _ = await send_raw(world.port, post_form(PATH, genuine))
            assert status == 200
        assert await world.one("select count(*) from cp.mo_inbox") == 1
        assert await world.one("select count(*) from cp.procedure where kind = 'sms'") == 1  # one HELP reply
