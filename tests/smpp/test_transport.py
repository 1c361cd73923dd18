"""Connector against the simulator over real TCP: each side is built on a different SMPP library."""

import asyncio
import struct
from collections import Counter

import pytest
import smpp34

from carrierpay.adapters.smpp import SmppBindError, SmppConnector
from carrierpay.simulators.smsc import ESME_RBINDFAIL, ESME_RINVPASWD, ESME_RMSGQFUL, SmscSimulator

from .conftest import BROKE, MSISDN, PASSWORD, harness, run_async, smpp_section


@run_async
async def test_bind_ok_and_enquire_link():
    async with harness(enquire_link_interval_s=0.05) as h:
        assert h.connector.bound and h.smsc.binds == 1
        await asyncio.sleep(0.2)  # a few keep-alives go by; the session must stay as it is
        assert h.connector.bound and h.connector.binds == 1


@pytest.mark.parametrize("status", [ESME_RINVPASWD, ESME_RBINDFAIL])
@run_async
async def test_bind_refused(status):
    async with SmscSimulator(password=PASSWORD, bind_fail_status=status) as smsc:
        connector = SmppConnector(smpp_section(smsc.port), {"SMSC_TEST_PASSWORD": "wrong"})
        with pytest.raises(SmppBindError) as exc:
            await connector.start()
        assert exc.value.command_status == status
        assert smsc.binds == 0 and smsc.bind_attempts == 1


@run_async
async def test_mt_delivered_and_receipt_parsed():
    async with harness() as h:
        r = await h.connector.send(h.sms(1, "Your PIN is 4321"))
        assert r["outcome"] == "pending" and r["call_id"] == 1 and r["carrier_code"] == "0x00000000"
        assert r["carrier_ref"] and "4321" not in str(r["request"])
        await h.wait(lambda: h.receipts)
        receipt = h.receipts[0]
        assert receipt["carrier_ref"] == r["carrier_ref"]
        assert (receipt["outcome"], receipt["stat"], receipt["err"]) == ("succeeded", "DELIVRD", "000")
        assert receipt["msisdn"] == MSISDN and h.smsc.texts_for(MSISDN) == ["Your PIN is 4321"]


@run_async
async def test_premium_mt_charged_once_and_settled_by_receipt():
    async with harness() as h:
        before = h.smsc.balance(MSISDN)
        r = await h.connector.send(h.charge(2))
        assert r["outcome"] == "pending" and r["request"]["source_addr"] == "33005"
        await h.wait(lambda: h.receipts)
        assert h.receipts[0]["carrier_ref"] == r["carrier_ref"] and h.receipts[0]["outcome"] == "succeeded"
        assert len(h.smsc.ledger) == 1 and h.smsc.ledger[0]["amount_minor"] == 500
        assert h.smsc.ledger[0]["message_id"] == r["carrier_ref"]
        assert h.smsc.balance(MSISDN) == before - 500


@pytest.mark.parametrize("pricing", ["service_type", "tlv"])
@run_async
async def test_premium_pricing_by_service_type_or_tlv(pricing):
    premium = {
        "service_type": {"pricing": "service_type", "price_points": [{"amount_minor": 500, "service_type": "P500"}]},
        "tlv": {"pricing": "tlv",
                "price_points": [{"amount_minor": 500, "tlv": {"tag": "0x1401", "value": "ZAR500"}}]},
    }[pricing]
    prices = {"service_type": {"P500": 500}, "tlv": {"ZAR500": 500}}[pricing]
    async with harness(sim={"pricing": pricing, "price_points": prices}, premium=premium) as h:
        r = await h.connector.send(h.charge(3))
        assert r["outcome"] == "pending"
        await h.wait(lambda: h.receipts)
        assert [c["amount_minor"] for c in h.smsc.ledger] == [500]


@run_async
async def test_premium_mt_without_credit_fails_insufficient_funds():
    async with harness() as h:
        r = await h.connector.send(h.charge(4, msisdn=BROKE))
        assert r["outcome"] == "pending"  # the SMSC only finds out at delivery
        await h.wait(lambda: h.receipts)
        receipt = h.receipts[0]
        assert (receipt["outcome"], receipt["reason"], receipt["stat"]) == ("failed", "insufficient_funds", "UNDELIV")
        assert h.smsc.ledger == [] and h.smsc.texts_for(BROKE) == [] and h.smsc.balance(BROKE) == 100


@run_async
async def test_unpriced_charge_is_refused_locally():
    async with harness() as h:
        r = await h.connector.send(h.charge(5, amount_minor=123))
        assert (r["outcome"], r["reason"]) == ("failed", "rejected") and "retry_safe" not in r
        assert h.smsc.submits == []


@run_async
async def test_long_message_is_concatenated_and_reassembled():
    text = ("Long GSM text with extension chars {like} [these] and € signs. " * 7).strip()
    async with harness() as h:
        r = await h.connector.send(h.sms(6, text))
        assert r["outcome"] == "pending" and r["request"]["parts"] == len(r["carrier_refs"]) > 1
        await h.wait(lambda: h.smsc.texts_for(MSISDN))
        assert h.smsc.texts_for(MSISDN) == [text]
        refs = {s.short_message[3] for s in h.smsc.submits}
        assert len(refs) == 1  # one 8-bit reference for all parts
        await h.wait(lambda: len(h.receipts) == len(r["carrier_refs"]))
        assert {x["carrier_ref"] for x in h.receipts} == set(r["carrier_refs"])


@pytest.mark.parametrize("text", ["Привет, мир", "مرحبا 🎮 你好", "Ж" * 200 + "🎮" * 30])
@run_async
async def test_ucs2_text(text):
    async with harness() as h:
        r = await h.connector.send(h.sms(7, text))
        assert r["outcome"] == "pending" and r["request"]["data_coding"] == 8
        await h.wait(lambda: h.smsc.texts_for(MSISDN))
        assert h.smsc.texts_for(MSISDN) == [text]
        assert {s.data_coding for s in h.smsc.submits} == {8}


@run_async
async def test_throttling_backs_off_and_nothing_is_duplicated():
    async with harness() as h:
        h.smsc.throttle_next(5)
        h.smsc.throttle_next(2, status=ESME_RMSGQFUL)
        results = await asyncio.gather(*(h.connector.send(h.sms(10 + i, f"msg {i}")) for i in range(6)))
        assert [r["outcome"] for r in results] == ["pending"] * 6
        refs = [r["carrier_ref"] for r in results]
        assert len(set(refs)) == 6
        accepted = [s for s in h.smsc.submits if s.status == 0]
        assert len(accepted) == 6 and len(h.smsc.submits) == 13
        assert Counter(s.short_message for s in accepted) == Counter(f"msg {i}".encode() for i in range(6))
        assert h.connector.throttled_count == 7
        await h.wait(lambda: len(h.smsc.delivered) == 6)
        assert sorted(h.smsc.texts_for(MSISDN)) == sorted(f"msg {i}" for i in range(6))


@run_async
async def test_throttled_beyond_retries_is_failed_and_safe_to_retry():
    async with harness(throttle_max_retries=1) as h:
        h.smsc.throttle_next(2)
        r = await h.connector.send(h.charge(20))
        assert (r["outcome"], r["reason"], r["carrier_code"]) == ("failed", "throttled", "0x00000058")
        assert h.smsc.ledger == [] and h.smsc.delivered == []


@run_async
async def test_rejection_status_maps_to_reason():
    async with harness() as h:
        h.smsc.fail_next(1, status=0x0B)
        r = await h.connector.send(h.sms(21, "hi"))
        assert (r["outcome"], r["reason"], r["carrier_code"]) == ("failed", "subscriber_invalid", "0x0000000B")
        h.smsc.fail_next(1, status=0x08)
        r = await h.connector.send(h.sms(22, "hi"))
        assert (r["outcome"], r["reason"]) == ("failed", "transient")


@pytest.mark.parametrize("text", ["  sUb   GeMs ", "Подписка", "订阅 游戏", "اشتراك", "STOP\n"])
@run_async
async def test_mo_received_verbatim(text):
    async with harness() as h:
        mo_id = await h.smsc.inject_mo(MSISDN, "33001", text)
        await h.wait(lambda: h.mo)
        mo = h.mo[0]
        assert (mo["msisdn"], mo["short_code"], mo["text"], mo["carrier_msg_id"]) == (MSISDN, "33001", text, mo_id)
        assert mo["received_at"]


@run_async
async def test_long_mo_is_joined():
    text = "Длинное сообщение " * 15
    async with harness() as h:
        await h.smsc.inject_mo(MSISDN, "33001", text)
        await h.wait(lambda: h.mo)
        assert [m["text"] for m in h.mo] == [text]


@run_async
async def test_duplicate_mo_keeps_its_id():
    async with harness() as h:
        mo_id = await h.smsc.inject_mo(MSISDN, "33001", "YES", duplicate=True)
        await h.wait(lambda: len(h.mo) == 2)
        assert [m["carrier_msg_id"] for m in h.mo] == [mo_id, mo_id]


@run_async
async def test_receipt_for_unknown_message_is_still_reported():
    async with harness() as h:
        await h.smsc.send_receipt("feedbeef42", "DELIVRD", "000", msisdn="27820000009", short_code="33005")
        await h.wait(lambda: h.receipts)
        assert h.receipts[0]["carrier_ref"] == "feedbeef42" and h.receipts[0]["msisdn"] == "+27820000009"
        await h.smsc.send_receipt("x", text="id:x sub:1 stat:UNDELIV err:ABC submit date:250101120000 Text:..")
        await h.wait(lambda: len(h.receipts) == 2)
        assert h.receipts[1]["outcome"] == "failed" and h.connector.binds == 1  # odd fields do not drop the bind


@pytest.mark.parametrize("mode", ["csv", "reordered", "tlv"])
@run_async
async def test_receipt_variants_from_the_smsc(mode):
    async with harness(sim={"dlr_mode": mode, "dlr_duplicates": True}) as h:
        ok = await h.connector.send(h.sms(30, "hello"))
        broke = await h.connector.send(h.charge(31, msisdn=BROKE))
        await h.wait(lambda: len(h.receipts) == 4)
        by_ref = {}
        for x in h.receipts:
            by_ref.setdefault(x["carrier_ref"], []).append((x["outcome"], x["reason"]))
        assert by_ref[ok["carrier_ref"]] == [("succeeded", None)] * 2
        assert by_ref[broke["carrier_ref"]] == [("failed", "insufficient_funds")] * 2


@run_async
async def test_no_receipts_mode():
    async with harness(sim={"dlr_mode": "none"}) as h:
        r = await h.connector.send(h.sms(32, "hello"))
        assert r["outcome"] == "pending"
        await h.wait(lambda: h.smsc.delivered)
        assert h.smsc.receipts_sent == [] and h.receipts == []


@run_async
async def test_malformed_pdus_to_the_simulator():
    async with harness() as h:
        port = h.smsc.port

        async def raw(data: bytes) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(data)
            await writer.drain()
            try:
                return await asyncio.wait_for(reader.read(1024), 1)
            except TimeoutError:
                return b""  # no answer is a fair answer to a stray response PDU
            finally:
                writer.close()

        # length below the header size: NACK and hang up
        assert struct.unpack("!IIII", (await raw(struct.pack("!IIII", 5, 4, 0, 1)))[:16])[1] == 0x80000000
        # unknown command id: NACK, connection kept
        nack = await raw(struct.pack("!IIII", 16, 0x0000_0777, 0, 2))
        assert struct.unpack("!IIII", nack[:16])[1:3] == (0x80000000, 0x03)
        # bind with no NUL terminators
        nack = await raw(struct.pack("!IIII", 20, 0x09, 0, 3) + b"abcd")
        assert struct.unpack("!IIII", nack[:16])[1] == 0x80000000
        # random junk
        await raw(b"\x00\x00\x00\x20" + b"\xff" * 28)
        # the simulator still serves its real client
        r = await h.connector.send(h.sms(40, "still here"))
        assert r["outcome"] == "pending"
        assert h.smsc.nacks_sent >= 3


@run_async
async def test_malformed_pdus_to_the_connector():
    async with harness() as h:
        # deliver_sm whose body stops in the middle of its fields
        good = smpp34.DeliverSm(source_addr="27820000001", destination_addr="33001", short_message=b"hi").encode()
        truncated = bytearray(good[:24])
        struct.pack_into("!I", truncated, 0, len(truncated))
        h.smsc.send_raw(bytes(truncated))
        # deliver_sm with an invalid TON and garbage, then an unknown command id
        h.smsc.send_raw(struct.pack("!IIII", 16 + 6, 0x05, 0, 99) + b"\x00\xee\xee\xee\xee\xee")
        h.smsc.send_raw(struct.pack("!IIII", 16, 0x0000_0888, 0, 100))
        # An unknown command id leaves the library no way to stay in step: it re-binds.
        await h.wait(lambda: h.connector.binds == 2 and h.connector.bound)
        r = await h.connector.send(h.sms(41, "after the junk"))
        assert r["outcome"] == "pending", (r["reason"], r["response"], h.connector.binds)
        await h.smsc.inject_mo(MSISDN, "33001", "ping")
        await h.wait(lambda: h.mo)
        assert h.mo[-1]["text"] == "ping"


async def _drop_mid_window(h, calls, window):
    base = len(h.smsc.submits)
    h.smsc.hold_responses = True
    tasks = [asyncio.create_task(h.connector.send(c)) for c in calls]
    await h.wait(lambda: len(h.smsc.submits) - base >= window)
    await asyncio.sleep(0.05)
    assert len(h.smsc.submits) - base == window  # the window holds the rest back
    h.smsc.hold_responses = False
    h.smsc.drop_connections()
    results = await asyncio.gather(*tasks)
    await h.connector.wait_bound(10)
    return results


@run_async
async def test_connection_drop_mid_window_accounts_for_every_message():
    async with harness() as h:
        first = await h.connector.send(h.sms(99, "before"))
        calls = [h.sms(100 + i, f"batch {i}") for i in range(15)]
        results = await _drop_mid_window(h, calls, window=10)
        outcomes = Counter(r["outcome"] for r in results)
        assert outcomes == {"unknown": 10, "pending": 5}
        assert h.connector.binds == 2 and h.smsc.binds == 2
        for r in results:
            if r["outcome"] == "unknown":
                assert r["reason"] == "connection_lost" and r["carrier_ref"] is None
        # every message reached the SMSC exactly once: none lost, none sent twice
        sent = Counter(s.short_message for s in h.smsc.submits if s.short_message != b"before")
        assert sent == Counter(f"batch {i}".encode() for i in range(15))
        accepted_refs = {r["carrier_ref"] for r in results if r["outcome"] == "pending"} | {first["carrier_ref"]}
        assert len(accepted_refs) == 6


@run_async
async def test_premium_mt_unknown_after_drop_is_not_resent():
    async with harness(window=3) as h:
        calls = [h.charge(200 + i, text=f"gems {i}") for i in range(5)]
        results = await _drop_mid_window(h, calls, window=3)
        unknown = [r for r in results if r["outcome"] == "unknown"]
        assert len(unknown) == 3
        assert Counter(r["outcome"] for r in results)["pending"] == 2
        assert Counter(s.short_message for s in h.smsc.submits) == Counter(f"gems {i}".encode() for i in range(5))
        await h.wait(lambda: len(h.smsc.ledger) == 5)
        # the SMSC charged the unknown ones too: that is why they must be reconciled, not resent
        assert Counter(c["message_id"] for c in h.smsc.ledger).most_common(1)[0][1] == 1
        await h.wait(lambda: len(h.receipts) == 5)  # receipts for all five reach the new session


@run_async
async def test_missing_response_becomes_unknown():
    async with harness(response_timeout_s=1) as h:
        h.smsc.hold_responses = True
        r = await h.connector.send(h.charge(300))
        assert (r["outcome"], r["reason"]) == ("unknown", "timeout")
        assert len(h.smsc.submits) == 1


@run_async
async def test_smsc_gone_means_unreachable_and_nothing_sent():
    async with harness(response_timeout_s=1) as h:
        await h.smsc.stop()  # the SMSC goes away and refuses every re-bind
        r = await h.connector.send(h.charge(30))
        assert (r["outcome"], r["reason"], r["carrier_ref"]) == ("failed", "unreachable", None)
        assert h.smsc.ledger == [] and h.smsc.delivered == []
