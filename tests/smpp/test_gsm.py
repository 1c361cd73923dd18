import gsm0338  # noqa: F401  (independent codec to check ours against)
import pytest
from hypothesis import given
from hypothesis import strategies as st

from carrierpay.adapters.smpp import gsm

GSM_CHARS = gsm._BASIC.replace("\x1b", "") + "".join(gsm._EXTENSION.values())


def test_basic_and_extension_characters_round_trip():
    text = "Hello @£$ {curly} [square] ~|\\^ €5 ÄÖÑÜ"
    data = gsm.encode_gsm7(text)
    assert data == text.encode("gsm03.38")
    assert gsm.decode_gsm7(data) == text
    assert gsm.gsm7_length("€") == 2 and len(gsm.encode_gsm7("€")) == 2


def test_alphabet_choice():
    assert gsm.choose_alphabet("PIN 1234") == "gsm7"
    assert gsm.choose_alphabet("Привет") == "ucs2"
    assert gsm.choose_alphabet("emoji 🎮") == "ucs2"
    assert gsm.choose_alphabet("café", default="latin1") == "latin1"
    with pytest.raises(UnicodeEncodeError):
        gsm.encode_gsm7("ç̃")


def test_single_message_limits():
    assert len(gsm.split("a" * 160, ref=1)) == 1
    assert len(gsm.split("€" * 80, ref=1)) == 1  # 160 septets
    assert len(gsm.split("€" * 81, ref=1)) == 2
    assert len(gsm.split("Ж" * 70, ref=1)) == 1
    assert len(gsm.split("Ж" * 71, ref=1)) == 2


def test_concatenation_headers():
    parts = gsm.split("x" * 400, ref=0x1A7)
    assert [p.total for p in parts] == [3, 3, 3]
    for i, p in enumerate(parts, start=1):
        assert p.esm_class == gsm.UDHI
        assert p.short_message[:6] == bytes((5, 0, 3, 0xA7, 3, i))
        assert len(p.short_message) - 6 <= 153


def test_escape_and_surrogates_are_never_split():
    parts = gsm.split("a" * 152 + "€" + "b" * 10, ref=1)
    assert parts[0].short_message[-1] != gsm.ESC
    emoji = gsm.split("x" + "🎮" * 40, ref=2)
    for p in emoji:
        gsm.parse_udh(p.short_message)[1].decode("utf-16-be")  # each part decodes alone


def test_too_many_parts():
    with pytest.raises(gsm.TextTooLong):
        gsm.split("y" * 2000, ref=1, max_parts=6)


@given(st.text(alphabet=GSM_CHARS, max_size=600))
def test_gsm_split_reassembles(text):
    parts = gsm.split(text or "a", ref=9)
    body = b"".join(gsm.parse_udh(p.short_message)[1] if p.total > 1 else p.short_message for p in parts)
    assert body.decode("gsm03.38") == (text or "a")
    assert all(len(p.short_message) <= 160 for p in parts)


@given(st.text(min_size=1, max_size=400))
def test_any_text_splits_and_reassembles(text):
    parts = gsm.split(text, ref=3, max_parts=255)
    data = b"".join(gsm.parse_udh(p.short_message)[1] if p.total > 1 else p.short_message for p in parts)
    assert gsm.decode(data, parts[0].data_coding) == text
    limit = 160 if parts[0].alphabet == "gsm7" else 140
    assert all(len(p.short_message) <= limit for p in parts)
