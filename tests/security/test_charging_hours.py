"""Charges must not leave outside the carrier's charging hours (here 08:00-22:00 in Lagos), whatever a
merchant does with its own database role: confirm a PIN at 22:02, or place a charge just before closing
that then fails transiently, is throttled or finds the carrier unreachable. An adapter (its own role)
claiming at any moment of the night gets none of them; at 08:00 it gets each once."""

from __future__ import annotations

import re

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.security.conftest import role_url

ADAPTER_ROLE = "cp_security_adapter"


@pytest.fixture
def world_url(world_url):
    """The shared world, with charging hours on test_ng and an adapter login."""
    with psycopg.connect(world_url, autocommit=True) as conn:
        conn.execute("""update cp.carrier set spec = spec || '{"charging_hours": "08:00-22:00"}'
                        where code = 'test_ng'""")
        # Roles are cluster-wide: another test's database may have made it already.
        conn.execute(f"""do $$ begin
                             if not exists (select 1 from pg_roles where rolname = '{ADAPTER_ROLE}') then
                                 create role {ADAPTER_ROLE} login in role carrierpay_adapter;
                             end if;
                         end $$""")
    return world_url


@pytest.fixture
def adapter(world_url):
    with psycopg.connect(role_url(world_url, ADAPTER_ROLE), autocommit=True) as conn:
        yield conn


def at(owner, moment: str) -> None:
    owner.execute("select admin.set_clock(%s)", [moment])


def claimed_charges(adapter) -> list[dict]:
    rows = adapter.execute("select adapter.claim_calls('test_ng', 1000, interval '1 minute', 'night-worker')")
    return [doc for (doc,) in rows if doc["operation"] == "charge"]


def handset_pin(adapter, msisdn: str) -> str:
    """Send the queued PIN SMS as an adapter would, and read the PIN off the handset."""
    pins = []
    for (doc,) in adapter.execute("select adapter.claim_calls('test_ng', 1000, interval '1 minute', 'sms-worker')"):
        if doc["operation"] == "send_sms" and doc.get("msisdn") == msisdn:
            pins.append(re.search(r"PIN for .* is ([0-9]+)", doc["text"]).group(1))
        adapter.execute("select adapter.complete_calls(%s)", [Jsonb([{"call_id": doc["call_id"],
                                                                      "outcome": "succeeded"}])])
    assert len(pins) == 1, pins
    return pins[0]


def test_a_pin_confirmed_at_2202_is_charged_at_the_next_opening(owner, merchant, adapter):
    at(owner, "2030-03-04 20:55+00")  # 21:55 in Lagos
    sub = merchant.execute(
        "select api.subscribe('acme', '+2348020000060', 'club', 'daily', 'late-optin')").fetchone()[0]
    pin = handset_pin(adapter, "+2348020000060")
    at(owner, "2030-03-04 21:02+00")  # 22:02
    assert merchant.execute("select api.confirm_optin('acme', %s, %s)",
                            [sub["optin_id"], pin]).fetchone()[0]["status"] == "confirmed"
    for moment in ("2030-03-04 21:02+00", "2030-03-04 23:30+00", "2030-03-05 06:59:59+00"):
        at(owner, moment)
        assert claimed_charges(adapter) == [], moment
    at(owner, "2030-03-05 07:00+00")  # 08:00
    charges = claimed_charges(adapter)
    assert [doc["msisdn"] for doc in charges] == ["+2348020000060"]
    assert claimed_charges(adapter) == []


@pytest.mark.parametrize("reason, extra", [("transient", {}), ("throttled", {"retry_after_s": 60}),
                                           ("unreachable", {})])
def test_a_charge_sent_again_after_closing_waits_for_the_opening(owner, merchant, adapter, reason, extra):
    at(owner, "2030-03-04 20:59+00")  # 21:59 in Lagos
    payment = merchant.execute("select api.charge('acme', '+2348020000061', 'gems', 'near-closing')").fetchone()[0]
    [call] = claimed_charges(adapter)
    at(owner, "2030-03-04 20:59:45+00")
    adapter.execute("select adapter.complete_calls(%s)",
                    [Jsonb([{"call_id": call["call_id"], "outcome": "failed", "reason": reason, **extra}])])
    for moment in ("2030-03-04 21:00:30+00", "2030-03-04 21:05+00", "2030-03-05 03:00+00"):
        at(owner, moment)
        assert claimed_charges(adapter) == [], moment
    waiting = owner.execute(
        "select c.status::text, q.available_at from cp.carrier_call c join cp.call_queue q using (call_id) "
        "where c.procedure_id = %s", [payment["id"]]).fetchall()
    assert [(status, at_.isoformat()) for status, at_ in waiting] == [("queued", "2030-03-05T07:00:00+00:00")]
    at(owner, "2030-03-05 07:00+00")
    assert [doc["procedure_id"] for doc in claimed_charges(adapter)] == [payment["id"]]

