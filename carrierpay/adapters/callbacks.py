"""Carrier callbacks: authenticate them (signature, Basic, source IP) and read what they say.

The callback server calls `verify_and_parse_callback` for every request a carrier sends. The
function is pure: the same request always gives the same answer, so duplicates and retries are
harmless here and are deduplicated where the state lives (the database, by correlator).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from carrierpay.adapters.encodings import ParsedBody, UnreadableResponse, extract, parse_document
from carrierpay.adapters.money import AmountError, parse_amount
from carrierpay.adapters.redact import Redactor
from carrierpay.adapters.results import decide
from carrierpay.adapters.secrets import Secrets
from carrierpay.adapters.spec import CarrierSpec
from carrierpay.adapters.templates import render_text


class CallbackError(ValueError):
    """A callback we will not act on. `status` is the HTTP status the callback server should answer."""

    status = 400


class CallbackRejected(CallbackError):
    """The callback failed authentication: wrong signature, wrong credentials, or a foreign source IP."""

    status = 403


class CallbackUnreadable(CallbackError):
    status = 400


def verify_and_parse_callback(
    spec: CarrierSpec,
    method: str,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    body: bytes | str,
    peer_ip: str | None,
    *,
    secrets: Secrets | Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Authenticate one callback and return what it reports about one of our calls.

    Returns {"correlator", "outcome", "reason", "carrier_code", "carrier_message", "carrier_ref",
    "amount_minor", "currency", "fields", "payload"}; `fields` are the extracted values and
    `payload` the redacted request, both for the event log. Raises CallbackRejected (answer 403)
    or CallbackUnreadable (answer 400).
    """
    config = spec.data.get("callbacks")
    if not config:
        raise CallbackUnreadable(f"{spec.code} does not send callbacks")
    secrets = secrets if isinstance(secrets, Secrets) else Secrets(secrets)
    raw = body.encode() if isinstance(body, str) else (body or b"")
    headers = {key.lower(): value for key, value in headers.items()}
    allowed = config.get("methods") or ["POST", "GET"]
    if method.upper() not in allowed:
        raise CallbackUnreadable(f"method {method} is not one this carrier uses for callbacks")

    params, parsed = _read(config["encoding"], dict(query), raw)
    for check in config.get("auth") or []:
        _authenticate(check, secrets, method, headers, params, raw, peer_ip)

    fields = extract(parsed, config["extract"], config.get("namespaces"))
    correlator = fields.get("correlator")
    if correlator in (None, ""):
        raise CallbackUnreadable("callback names none of our calls (no correlator)")
    decision = decide([("callbacks.results", config.get("results") or [])], fields)
    amount_minor = None
    if fields.get("amount") is not None:
        try:
            amount_minor = parse_amount(fields["amount"], spec.amount["format"], spec.amount["exponent"])
        except AmountError as exc:
            raise CallbackUnreadable(str(exc)) from exc
    redactor = Redactor(lambda: secrets.revealed)
    code = fields.get("code")
    return {
        "correlator": str(correlator),
        "outcome": decision.outcome,
        "reason": decision.reason,
        "carrier_code": None if code in (None, "") else str(code),
        "carrier_message": None if fields.get("message") in (None, "") else str(fields["message"]),
        "carrier_ref": None if fields.get("carrier_ref") in (None, "") else str(fields["carrier_ref"]),
        "amount_minor": amount_minor,
        "currency": fields.get("currency"),
        "fields": redactor.value({k: v for k, v in fields.items() if k not in ("correlator",)}),
        "payload": redactor.value(params) if params else redactor.text(raw.decode("utf-8", errors="replace")),
    }


def _read(encoding: str, query: dict[str, str], raw: bytes) -> tuple[dict[str, Any], ParsedBody]:
    """Flat parameters (for signatures) and the parsed document (for extraction)."""
    if encoding == "form":
        try:
            body_params = dict(parse_qsl(raw.decode(), keep_blank_values=True)) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError) as exc:
            raise CallbackUnreadable(f"not form-encoded: {exc}") from exc
        params = {**query, **body_params}
        return params, ParsedBody("form", params)
    try:
        document = parse_document(encoding, raw)
    except UnreadableResponse as exc:
        raise CallbackUnreadable(str(exc)) from exc
    params = dict(query)
    if isinstance(document, dict):
        params.update({k: v for k, v in document.items() if not isinstance(v, dict | list)})
    return params, ParsedBody(encoding, document)


def _authenticate(
    check: Mapping[str, Any],
    secrets: Secrets,
    method: str,
    headers: Mapping[str, str],
    params: Mapping[str, Any],
    raw: bytes,
    peer_ip: str | None,
) -> None:
    kind = check["type"]
    if kind == "ip_allow_list":
        try:
            address = ipaddress.ip_address(peer_ip or "")
        except ValueError as exc:
            raise CallbackRejected(f"source address {peer_ip!r} is not an IP address") from exc
        if not any(address in ipaddress.ip_network(cidr, strict=False) for cidr in check["cidrs"]):
            raise CallbackRejected(f"source address {peer_ip} is not in the carrier's allow-list")
    elif kind == "basic":
        expected = f"{secrets.resolve(check['username'])}:{secrets.resolve(check['password'])}"
        supplied = headers.get("authorization", "")
        decoded = ""
        if supplied.startswith("Basic "):
            try:
                decoded = base64.b64decode(supplied[6:]).decode()
            except ValueError:
                decoded = ""
        if not hmac.compare_digest(decoded.encode(), expected.encode()):
            raise CallbackRejected("wrong or missing Basic credentials")
    elif kind == "signature":
        supplied = str(params.get(check["field"], "")) if "field" in check else headers.get(check["header"].lower(), "")
        if not supplied:
            raise CallbackRejected("callback is not signed")
        expected = callback_signature(check, secrets, method, params, raw)
        if check.get("encoding", "hex") == "hex":  # hex is case-insensitive; base64 is not
            supplied, expected = supplied.lower(), expected.lower()
        if not hmac.compare_digest(supplied.strip().encode(), expected.encode()):
            raise CallbackRejected("callback signature does not match")


def callback_signature(
    check: Mapping[str, Any], secrets: Secrets, method: str, params: Mapping[str, Any], raw: bytes
) -> str:
    """The signature a genuine callback carries, per the spec's `signature` check."""
    signed = {k: v for k, v in params.items() if k != check.get("field")}
    canonical_kind = check["canonical"]
    if canonical_kind == "sorted_values":
        canonical = "".join(str(signed[key]) for key in sorted(signed))
    elif canonical_kind == "sorted_pairs":
        canonical = check.get("pair_separator", "&").join(f"{key}={signed[key]}" for key in sorted(signed))
    elif canonical_kind == "raw_body":
        canonical = raw.decode("utf-8", errors="replace")
    else:
        canonical = render_text(check["template"], {"params": signed, "body": raw.decode(), "method": method})
    key = secrets.resolve(check["key"])
    algorithm = check["algorithm"]
    if algorithm.startswith("hmac_"):
        digest = hmac.new(key.encode(), canonical.encode(), algorithm[5:]).digest()
    else:
        keyed = canonical + key if check.get("key_position", "append") == "append" else key + canonical
        digest = hashlib.new(algorithm, keyed.encode()).digest()
    return digest.hex() if check.get("encoding", "hex") == "hex" else base64.b64encode(digest).decode()
