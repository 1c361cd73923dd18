"""Delivery receipt parsing.

The SMPP 3.4 appendix B text (`id:.. sub:.. dlvrd:.. submit date:.. done date:.. stat:.. err:.. Text:..`)
is only a convention; SMSCs reorder fields, change case, drop fields, use `key=value` with commas, or
send the facts as TLVs (receipted_message_id, message_state, network_error_code) with no text at all.
The parser accepts all of those and never raises: a receipt it cannot read still comes back, with
outcome `unknown`, so the database can match it later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime

# TLV tags (SMPP 3.4 section 5.3.2)
TLV_RECEIPTED_MESSAGE_ID = 0x001E
TLV_MESSAGE_STATE = 0x0427
TLV_NETWORK_ERROR_CODE = 0x0423

# message_state TLV values -> the stat words used in receipt text
MESSAGE_STATES = {
    1: "ENROUTE",
    2: "DELIVRD",
    3: "EXPIRED",
    4: "DELETED",
    5: "UNDELIV",
    6: "ACCEPTD",
    7: "UNKNOWN",
    8: "REJECTD",
}

_STAT_ALIASES = {
    "DELIVERED": "DELIVRD",
    "DELIVRD": "DELIVRD",
    "DELIVRED": "DELIVRD",
    "EXPIRED": "EXPIRED",
    "DELETED": "DELETED",
    "UNDELIVERABLE": "UNDELIV",
    "UNDELIV": "UNDELIV",
    "UNDELIVERED": "UNDELIV",
    "ACCEPTED": "ACCEPTD",
    "ACCEPTD": "ACCEPTD",
    "UNKNOWN": "UNKNOWN",
    "ENROUTE": "ENROUTE",
    "REJECTED": "REJECTD",
    "REJECTD": "REJECTD",
}

# stat -> (outcome, reason, final). ENROUTE and ACCEPTD are not final: the message may still be
# delivered (or charged), so they must not settle anything.
STAT_OUTCOMES: dict[str, tuple[str, str | None, bool]] = {
    "DELIVRD": ("succeeded", None, True),
    "EXPIRED": ("failed", "expired", True),
    "DELETED": ("failed", "deleted", True),
    "UNDELIV": ("failed", "undeliverable", True),
    "REJECTD": ("failed", "rejected", True),
    "ACCEPTD": ("unknown", "not_final", False),
    "ENROUTE": ("unknown", "not_final", False),
    "UNKNOWN": ("unknown", "unknown_state", True),
}

_KEYS = {
    "id": "id",
    "msgid": "id",
    "message_id": "id",
    "messageid": "id",
    "sub": "sub",
    "dlvrd": "dlvrd",
    "submit date": "submit_date",
    "submit_date": "submit_date",
    "submitdate": "submit_date",
    "done date": "done_date",
    "done_date": "done_date",
    "donedate": "done_date",
    "stat": "stat",
    "status": "stat",
    "state": "stat",
    "err": "err",
    "error": "err",
    "err_code": "err",
    "text": "text",
}
_KEY_RE = re.compile(
    r"(?:^|(?<=[\s,;&|]))(" + "|".join(sorted((re.escape(k).replace(r"\ ", r"[ _]?") for k in _KEYS), key=len,
                                              reverse=True)) + r")\s*[:=]\s*",
    re.IGNORECASE,
)


@dataclass
class DeliveryReceipt:
    carrier_ref: str | None
    stat: str | None
    err: str | None
    outcome: str
    reason: str | None
    final: bool
    sub: str | None = None
    dlvrd: str | None = None
    submit_date: str | None = None
    done_date: str | None = None
    fields: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def _norm_key(raw: str) -> str:
    k = re.sub(r"[ _]+", " ", raw.strip().lower())
    return _KEYS.get(k) or _KEYS.get(k.replace(" ", "_")) or _KEYS.get(k.replace(" ", "")) or k


def _fields_from_text(text: str) -> dict[str, str]:
    found: dict[str, str] = {}
    matches = list(_KEY_RE.finditer(text))
    i = 0
    while i < len(matches):
        m = matches[i]
        key = _norm_key(m.group(1))
        if key in found:  # a repeated key is more likely inside Text: than a real field
            i += 1
            continue
        # The value runs to the next key we have not seen yet; after Text: anything goes.
        j = i + 1
        while j < len(matches) and (key == "text" and _norm_key(matches[j].group(1)) in found):
            j += 1
        end = matches[j].start() if j < len(matches) else len(text)
        value = text[m.end() : end]
        found[key] = value if key == "text" else value.strip().strip(",;&|").strip()
        i = j
    return found


def _norm_date(value: str | None) -> str | None:
    if not value:
        return None
    digits = re.sub(r"\D", "", value)
    for fmt, n in (("%y%m%d%H%M%S", 12), ("%y%m%d%H%M", 10), ("%Y%m%d%H%M%S", 14)):
        if len(digits) == n:
            try:
                return datetime.strptime(digits, fmt).isoformat()
            except ValueError:
                return None
    return None


def _norm_stat(value: str | None) -> str | None:
    if value is None:
        return None
    v = value.strip().upper()
    if v.isdigit():
        return MESSAGE_STATES.get(int(v), "UNKNOWN")
    return _STAT_ALIASES.get(v, v or None)


def _tlv_text(v: bytes | str | int) -> str:
    if isinstance(v, bytes):
        return v.rstrip(b"\x00").decode("ascii", errors="replace")
    return str(v)


def convert_id(message_id: str | None, id_format: str) -> str | None:
    """Some SMSCs answer submit_sm_resp with a hex id and put the same id in decimal in receipts (or the reverse)."""
    if not message_id or id_format == "as_is":
        return message_id
    try:
        if id_format == "dec_to_hex":
            return format(int(message_id, 10), "x")
        if id_format == "hex_to_dec":
            return str(int(message_id, 16))
    except ValueError:
        return message_id
    return message_id


def is_receipt_text(text: str | None) -> bool:
    """Looks like a receipt even when esm_class does not say so."""
    if not text:
        return False
    f = _fields_from_text(text)
    return "id" in f and "stat" in f


def parse_receipt(
    text: str | bytes | None,
    tlvs: Mapping[int, bytes | str | int] | None = None,
    *,
    error_map: Mapping[str, str] | None = None,
    id_format: str = "as_is",
) -> DeliveryReceipt:
    """Read a receipt from its text and/or TLVs; TLVs win where both are present, as they are typed."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    fields = _fields_from_text(text or "")
    tlvs = tlvs or {}
    carrier_ref = fields.get("id") or None
    stat = _norm_stat(fields.get("stat"))
    err = fields.get("err") or None
    if TLV_RECEIPTED_MESSAGE_ID in tlvs:
        carrier_ref = _tlv_text(tlvs[TLV_RECEIPTED_MESSAGE_ID]) or carrier_ref
    if TLV_MESSAGE_STATE in tlvs:
        raw = tlvs[TLV_MESSAGE_STATE]
        state = raw[0] if isinstance(raw, bytes) and raw else raw
        if isinstance(state, int):
            stat = MESSAGE_STATES.get(state, "UNKNOWN")
    if TLV_NETWORK_ERROR_CODE in tlvs and err is None:
        raw = tlvs[TLV_NETWORK_ERROR_CODE]
        if isinstance(raw, bytes) and len(raw) == 3:
            err = f"{int.from_bytes(raw[1:], 'big'):03d}"
    carrier_ref = convert_id(carrier_ref.strip() if carrier_ref else None, id_format)

    outcome, reason, final = STAT_OUTCOMES.get(stat or "", ("unknown", "unreadable_receipt", False))
    if outcome == "failed" and err is not None and error_map:
        mapped = error_map.get(err) or error_map.get(err.lstrip("0") or "0")
        if mapped is None and err.isdigit():
            mapped = error_map.get(f"{int(err):03d}")
        if mapped:
            reason = mapped
    return DeliveryReceipt(
        carrier_ref=carrier_ref,
        stat=stat,
        err=err,
        outcome=outcome,
        reason=reason,
        final=final,
        sub=fields.get("sub"),
        dlvrd=fields.get("dlvrd"),
        submit_date=_norm_date(fields.get("submit_date")),
        done_date=_norm_date(fields.get("done_date")),
        fields={k: v for k, v in fields.items() if k != "text"},  # Text: may hold a PIN
    )
