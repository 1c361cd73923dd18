"""Text encoding for SMS: GSM 03.38 default alphabet (with its extension table), UCS-2, and splitting.

SMPP carries GSM text unpacked (one septet per octet, data_coding 0); the SMSC packs it for the
air interface, so the per-message limits below are counted in septets for GSM and octets for the
8-bit and 16-bit alphabets. Concatenated parts carry a 6-octet UDH with an 8-bit reference.
"""

from __future__ import annotations

from dataclasses import dataclass

ESC = 0x1B

# Index = septet value. 0x1B is the escape to the extension table, never a character by itself.
_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
assert len(_BASIC) == 128
_EXTENSION = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}

_ENCODE_BASIC = {ch: i for i, ch in enumerate(_BASIC) if i != ESC}
_ENCODE_EXT = {ch: code for code, ch in _EXTENSION.items()}

# data_coding values (SMPP 3.4 section 5.2.19)
DCS_DEFAULT = 0x00  # SMSC default alphabet, GSM 03.38 on the networks we target
DCS_IA5 = 0x01
DCS_LATIN1 = 0x03
DCS_UCS2 = 0x08

# (single message limit, per-part limit once a UDH is needed), in the alphabet's units
_LIMITS = {
    "gsm7": (160, 153),
    "ascii": (160, 153),
    "latin1": (140, 134),
    "ucs2": (140, 134),  # octets; 70 / 67 UTF-16 code units
}
_DCS = {"gsm7": DCS_DEFAULT, "ascii": DCS_IA5, "latin1": DCS_LATIN1, "ucs2": DCS_UCS2}

UDHI = 0x40  # esm_class bit saying short_message starts with a user data header


class TextTooLong(ValueError):
    """The text needs more parts than the configured maximum."""


def is_gsm7(text: str) -> bool:
    return all(ch in _ENCODE_BASIC or ch in _ENCODE_EXT for ch in text)


def gsm7_length(text: str) -> int:
    """Septets needed: extension characters cost two (escape + code)."""
    return sum(2 if ch in _ENCODE_EXT else 1 for ch in text)


def encode_gsm7(text: str) -> bytes:
    """Unpacked septets. Raises UnicodeEncodeError on a character outside the alphabet."""
    out = bytearray()
    for pos, ch in enumerate(text):
        code = _ENCODE_BASIC.get(ch)
        if code is not None:
            out.append(code)
            continue
        ext = _ENCODE_EXT.get(ch)
        if ext is None:
            raise UnicodeEncodeError("gsm7", text, pos, pos + 1, "not in GSM 03.38")
        out += bytes((ESC, ext))
    return bytes(out)


def decode_gsm7(data: bytes) -> str:
    """Decode unpacked septets; an unknown escape falls back to the basic character, as handsets do."""
    out: list[str] = []
    escaped = False
    for b in data:
        b &= 0x7F
        if escaped:
            out.append(_EXTENSION.get(b, _BASIC[b] if b != ESC else " "))
            escaped = False
        elif b == ESC:
            escaped = True
        else:
            out.append(_BASIC[b])
    return "".join(out)


def choose_alphabet(text: str, default: str = "gsm7") -> str:
    """The SMSC default alphabet when the text fits it, else UCS-2 (which fits everything)."""
    if default == "gsm7" and is_gsm7(text):
        return "gsm7"
    if default == "latin1":
        try:
            text.encode("latin-1")
            return "latin1"
        except UnicodeEncodeError:
            pass
    if default == "ascii" and text.isascii():
        return "ascii"
    return "ucs2"


def encode(text: str, alphabet: str) -> bytes:
    if alphabet == "gsm7":
        return encode_gsm7(text)
    if alphabet == "ucs2":
        return text.encode("utf-16-be")
    if alphabet == "latin1":
        return text.encode("latin-1")
    if alphabet == "ascii":
        return text.encode("ascii")
    raise ValueError(f"unknown alphabet {alphabet!r}")


def decode(data: bytes, data_coding: int) -> str:
    """Decode a short_message body (without UDH) by data_coding; unknown codings decode as Latin-1."""
    if data_coding == DCS_UCS2:
        return data.decode("utf-16-be", errors="replace")
    if data_coding in (DCS_DEFAULT, 0xF0):
        return decode_gsm7(data)
    if data_coding == DCS_IA5:
        return data.decode("ascii", errors="replace")
    return data.decode("latin-1")


@dataclass(frozen=True)
class Segment:
    """One submit_sm's worth of user data."""

    short_message: bytes  # UDH (when concatenated) + encoded text
    data_coding: int
    esm_class: int  # UDHI set when a UDH is present
    part: int
    total: int
    alphabet: str


def _chunks(text: str, alphabet: str, limit: int) -> list[str]:
    """Split text into pieces whose encoding fits `limit` units, never breaking an escape or a surrogate pair."""
    pieces: list[str] = []
    current: list[str] = []
    used = 0
    for ch in text:
        if alphabet == "gsm7":
            cost = 2 if ch in _ENCODE_EXT else 1
        elif alphabet == "ucs2":
            cost = 4 if ord(ch) > 0xFFFF else 2
        else:
            cost = 1
        if used + cost > limit:
            pieces.append("".join(current))
            current, used = [], 0
        current.append(ch)
        used += cost
    if current or not pieces:
        pieces.append("".join(current))
    return pieces


def split(text: str, *, ref: int, default: str = "gsm7", max_parts: int | None = None) -> list[Segment]:
    """Encode `text`, splitting it into UDH-concatenated parts (8-bit reference `ref`) when it does not fit one."""
    alphabet = choose_alphabet(text, default)
    dcs = _DCS[alphabet]
    single, per_part = _LIMITS[alphabet]
    encoded = encode(text, alphabet)
    if len(encoded) <= single:
        return [Segment(encoded, dcs, 0, 1, 1, alphabet)]
    pieces = _chunks(text, alphabet, per_part)
    total = len(pieces)
    if total > 255 or (max_parts is not None and total > max_parts):
        raise TextTooLong(f"text needs {total} parts, the limit is {max_parts or 255}")
    ref &= 0xFF
    return [
        Segment(bytes((0x05, 0x00, 0x03, ref, total, i)) + encode(piece, alphabet), dcs, UDHI, i, total, alphabet)
        for i, piece in enumerate(pieces, start=1)
    ]


def parse_udh(short_message: bytes) -> tuple[tuple[int, int, int] | None, bytes]:
    """Return ((ref, total, part) or None, text bytes) for a short_message that starts with a UDH."""
    if not short_message:
        return None, b""
    udh_len = short_message[0]
    udh = short_message[1 : 1 + udh_len]
    body = short_message[1 + udh_len :]
    i = 0
    concat = None
    while i + 2 <= len(udh):
        iei, iel = udh[i], udh[i + 1]
        value = udh[i + 2 : i + 2 + iel]
        if iei == 0x00 and iel == 3 and len(value) == 3:
            concat = (value[0], value[1], value[2])
        elif iei == 0x08 and iel == 4 and len(value) == 4:
            concat = ((value[0] << 8) | value[1], value[2], value[3])
        i += 2 + iel
    return concat, body
