import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carrierpay.adapters.smpp.dlr import STAT_OUTCOMES, is_receipt_text, parse_receipt

ERRORS = {"069": "insufficient_funds"}


def test_standard_receipt():
    r = parse_receipt("id:0123456789 sub:001 dlvrd:001 submit date:2501011200 done date:2501011201 "
                      "stat:DELIVRD err:000 Text:Your PIN is 4321")
    assert (r.carrier_ref, r.stat, r.err, r.outcome, r.final) == ("0123456789", "DELIVRD", "000", "succeeded", True)
    assert r.submit_date == "2025-01-01T12:00:00" and r.done_date == "2025-01-01T12:01:00"
    assert "4321" not in str(r.as_dict())  # Text: is dropped, it may carry a PIN


@pytest.mark.parametrize(
    "text,ref,stat",
    [
        ("stat:UNDELIV err:069 id:abc", "abc", "UNDELIV"),
        ("ID:abc STAT:undeliv ERR:069", "abc", "UNDELIV"),
        ("id=abc,stat=UNDELIV,err=069", "abc", "UNDELIV"),
        ("id=abc;status=undeliverable;error=69", "abc", "UNDELIV"),
        ("Id: abc  Stat: UNDELIV  Err: 069", "abc", "UNDELIV"),
        ("id:abc submit_date:250101120030 done_date:250101120031 stat:UNDELIV err:069", "abc", "UNDELIV"),
    ],
)
def test_variants(text, ref, stat):
    r = parse_receipt(text, error_map=ERRORS)
    assert (r.carrier_ref, r.stat, r.outcome, r.reason) == (ref, stat, "failed", "insufficient_funds")


@pytest.mark.parametrize("stat,outcome", [(s, o[0]) for s, o in STAT_OUTCOMES.items()] + [("DELIVERED", "succeeded")])
def test_every_stat(stat, outcome):
    assert parse_receipt(f"id:1 stat:{stat} err:000").outcome == outcome


def test_not_final_states_do_not_settle():
    for stat in ("ENROUTE", "ACCEPTD"):
        r = parse_receipt(f"id:1 stat:{stat}")
        assert r.outcome == "unknown" and r.final is False


def test_missing_fields_and_garbage():
    assert parse_receipt("id:77").outcome == "unknown"
    assert parse_receipt("stat:DELIVRD").carrier_ref is None
    for junk in ("", None, b"\xff\xfe", "hello world", "id:"):
        parse_receipt(junk)
    assert parse_receipt("id:1 stat:DELIVRD err:ABC submit date:99999").err == "ABC"


def test_tlv_only_receipt_and_tlvs_win():
    tlvs = {0x001E: b"abc\x00", 0x0427: 5, 0x0423: b"\x03\x00\x45"}
    r = parse_receipt(b"", tlvs, error_map=ERRORS)
    assert (r.carrier_ref, r.stat, r.err, r.reason) == ("abc", "UNDELIV", "069", "insufficient_funds")
    r = parse_receipt("id:zzz stat:ENROUTE", {0x001E: "abc", 0x0427: b"\x02"})
    assert (r.carrier_ref, r.stat) == ("abc", "DELIVRD")


def test_id_format_conversion():
    assert parse_receipt("id:255 stat:DELIVRD", id_format="dec_to_hex").carrier_ref == "ff"
    assert parse_receipt("id:ff stat:DELIVRD", id_format="hex_to_dec").carrier_ref == "255"


def test_receipt_detection_by_text():
    assert is_receipt_text("id:1 stat:DELIVRD")
    assert not is_receipt_text("SUB GEMS")


FIELDS = st.fixed_dictionaries({
    "id": st.text(alphabet="0123456789abcdefABCDEF-", min_size=1, max_size=20),
    "stat": st.sampled_from(sorted(STAT_OUTCOMES)),
    "err": st.integers(0, 999).map(lambda n: f"{n:03d}"),
})


@given(FIELDS, st.randoms(), st.sampled_from([" ", ",", ";"]), st.sampled_from([":", "="]), st.booleans())
def test_reordered_and_recased(fields, rnd: random.Random, sep, eq, upper):
    items = [("id", fields["id"]), ("sub", "001"), ("dlvrd", "001"), ("stat", fields["stat"]), ("err", fields["err"])]
    rnd.shuffle(items)
    text = sep.join(f"{k.upper() if upper else k}{eq}{v}" for k, v in items) + f"{sep}Text{eq}stat:bogus id:bogus"
    r = parse_receipt(text)
    assert (r.carrier_ref, r.stat, r.err) == (fields["id"], fields["stat"], fields["err"])


@given(st.text(max_size=300))
def test_never_raises(text):
    parse_receipt(text)
