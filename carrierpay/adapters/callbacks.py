"""Carrier callbacks: authenticate them, then read what they say.

The callback server calls `verify_and_parse_callback` for every request a carrier sends. The
function is pure: the same request always gives the same answer, so duplicates and retries are
harmless here and are deduplicated where the state lives (the database, by correlator).

Order matters. Nothing the body says is interpreted before the request is authenticated:

1. the checks that need no body at all: the source address (`ip_allow_list`), the client
   certificate (`mutual_tls`), `basic` and `bearer` credentials;
2. signatures. One over the raw body (`canonical: raw_body`, or a template over `body` and
   `method`) is verified on the bytes as received. One over parameters (`sorted_values`,
   `sorted_pairs`, a template over `params`, or a signature carried in a form field) needs the
   form split into fields first: that split is flat (no nesting, no type conversion), limited to
   MAX_FORM_FIELDS fields of a body the server already capped in size, and the verified fields
   are exactly the ones read afterwards. Spec validation allows parameter signatures only on
   form-encoded callbacks, so a JSON or XML body is never parsed before it is authenticated;
3. only then the body is parsed (strict JSON: no NaN/Infinity, no number beyond a float, no
   nesting that exhausts the parser; XML without entities, network or huge trees), values are
   extracted and must be single values without NUL characters, and the amount must fit a bigint.

A spec whose callbacks have no credential check (only an IP allow-list, or nothing) is refused
by validation; should one reach this function anyway, every callback for it is rejected.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from carrierpay.adapters.encodings import ParsedBody, UnreadableResponse, extract, parse_document
from carrierpay.adapters.money import AmountError
from carrierpay.adapters.redact import Redactor
from carrierpay.adapters.results import decide
from carrierpay.adapters.secrets import MissingSecret, Secrets
from carrierpay.adapters.spec import CREDENTIAL_CHECKS, CarrierSpec
from carrierpay.adapters.templates import render_text

MAX_FORM_FIELDS = 256
# The spec sections for requests a carrier sends us, and what a carrier whose spec has one does.
_SENDS = {"callbacks": "send callbacks", "mo": "forward MO messages"}
# Checks that read nothing from the body, cheapest first; signatures come after them.
_REQUEST_CHECK_ORDER = {"ip_allow_list": 0, "mutual_tls": 1, "basic": 2, "bearer": 3}


class CallbackError(ValueError):
    """A callback we will not act on. `status` is the HTTP status the callback server should answer."""

    status = 400


class CallbackRejected(CallbackError):
    """The callback failed authentication: wrong signature, wrong credentials, or a foreign source IP."""

    status = 403


class CallbackUnreadable(CallbackError):
    status = 400


class CallbackMisconfigured(CallbackError):
    """We cannot check the callback (a secret is not set): the carrier should try again later."""

    status = 503


@dataclass(frozen=True)
class PeerCertificate:
    """The client certificate of a TLS connection, already verified against the server's client CA."""

    common_names: tuple[str, ...]
    sha256: str  # fingerprint of the DER certificate, lowercase hex without separators

    @classmethod
    def from_ssl(cls, decoded: Mapping[str, Any] | None, der: bytes | None) -> PeerCertificate | None:
        """From `SSLObject.getpeercert()` and `getpeercert(binary_form=True)`; None without a certificate."""
        if not der:
            return None
        names = tuple(value for rdn in (decoded or {}).get("subject", ()) for key, value in rdn
                      if key == "commonName")
        return cls(common_names=names, sha256=hashlib.sha256(der).hexdigest())


def verify_and_parse_callback(
    spec: CarrierSpec,
    method: str,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    body: bytes | str,
    peer_ip: str | None,
    *,
    secrets: Secrets | Mapping[str, str] | None = None,
    peer_cert: PeerCertificate | None = None,
) -> dict[str, Any]:
    """Authenticate one callback and return what it reports about one of our calls.

    Returns {"correlator", "outcome", "reason", "carrier_code", "carrier_message", "carrier_ref",
    "amount_minor", "currency", "fields", "payload"}; `fields` are the extracted values and
    `payload` the redacted request, both for the event log. Raises CallbackRejected (answer 403),
    CallbackUnreadable (answer 400) or CallbackMisconfigured (answer 503).
    """
    secrets = Secrets.of(secrets)
    fields, params, raw = _authenticated_fields(spec, "callbacks", method, headers, query, body, peer_ip, secrets,
                                                peer_cert)
    correlator = fields.get("correlator")
    if correlator in (None, ""):
        raise CallbackUnreadable("callback names none of our calls (no correlator)")
    decision = decide([("callbacks.results", spec.data["callbacks"].get("results") or [])], fields)
    try:
        amount_minor = spec.minor_units(fields.get("amount"))
    except AmountError as exc:
        raise CallbackUnreadable(str(exc)) from exc
    redactor = Redactor(lambda: secrets.revealed)
    code = fields.get("code")
    result = {
        "correlator": str(correlator),
        "outcome": decision.outcome,
        "reason": decision.reason,
        "carrier_code": None if code in (None, "") else str(code),
        "carrier_message": None if fields.get("message") in (None, "") else str(fields["message"]),
        "carrier_ref": None if fields.get("carrier_ref") in (None, "") else str(fields["carrier_ref"]),
        "amount_minor": amount_minor,
        "currency": None if fields.get("currency") in (None, "") else str(fields["currency"]),
        "fields": redactor.value({k: v for k, v in fields.items() if k not in ("correlator",)}),
        "payload": redactor.value(params) if params else redactor.text(raw.decode("utf-8", errors="replace")),
    }
    problem = _unstorable(result)
    if problem:
        raise CallbackUnreadable(problem)
    return result


MO_FIELDS = ("msisdn", "text", "short_code", "carrier_msg_id", "received_at")


def verify_and_parse_mo(
    spec: CarrierSpec,
    method: str,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    body: bytes | str,
    peer_ip: str | None,
    *,
    secrets: Secrets | Mapping[str, str] | None = None,
    peer_cert: PeerCertificate | None = None,
) -> dict[str, str]:
    """Authenticate one mobile-originated SMS an HTTP carrier forwards (its spec's `mo` section) and return it
    as `adapter.record_mo` takes it: {"msisdn", "text", "short_code", "carrier_msg_id", "received_at"}.

    A forged "STOP" would cancel someone's subscription and a forged "YES" confirm one, so an MO is
    authenticated exactly as a callback is. Raises CallbackRejected, CallbackUnreadable or
    CallbackMisconfigured like verify_and_parse_callback."""
    fields, _, _ = _authenticated_fields(spec, "mo", method, headers, query, body, peer_ip, Secrets.of(secrets),
                                         peer_cert)
    mo = {name: str(fields[name]) for name in MO_FIELDS if fields.get(name) not in (None, "")}
    sender = mo.get("msisdn", "").removeprefix("tel:")
    if not sender:
        raise CallbackUnreadable("MO message without a sender")
    # Carriers write the sender as tel:+<E.164>, +<E.164> or bare digits; we keep E.164.
    mo["msisdn"] = "+" + sender if sender.isdigit() else sender
    mo.setdefault("text", "")
    problem = _unstorable(mo, "MO message")
    if problem:
        raise CallbackUnreadable(problem)
    return mo


def _authenticated_fields(
    spec: CarrierSpec,
    section: str,
    method: str,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    body: bytes | str,
    peer_ip: str | None,
    secrets: Secrets,
    peer_cert: PeerCertificate | None,
) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """Authenticate a request the carrier sent us per one section of its spec (`callbacks`, `mo`), and only
    then read it: (extracted single-valued fields, flat parameters, raw body)."""
    config = spec.data.get(section)
    if not config:
        raise CallbackUnreadable(f"{spec.code} does not {_SENDS[section]}")
    checks = list(config.get("auth") or [])
    if not any(check.get("type") in CREDENTIAL_CHECKS for check in checks):
        raise CallbackRejected(f"{spec.code}: its spec has no credential check for {section}, so none is accepted")
    raw = _utf8(body) if isinstance(body, str) else (body or b"")
    headers = {key.lower(): value for key, value in headers.items()}
    query = dict(query)
    allowed = config.get("methods") or ["POST", "GET"]
    if method.upper() not in allowed:
        raise CallbackUnreadable(f"method {method[:10]} is not one this carrier uses for {section}")
    encoding = config["encoding"]

    try:
        for check in sorted((c for c in checks if c["type"] != "signature"),
                            key=lambda c: _REQUEST_CHECK_ORDER.get(c["type"], 9)):
            _authenticate_request(check, secrets, headers, query, peer_ip, peer_cert)
        form: dict[str, Any] | None = None
        for check in (c for c in checks if c["type"] == "signature"):
            if encoding == "form" and form is None and _signs_parameters(check):
                form = _form_parameters(query, raw)
            _verify_signature(check, secrets, method, headers, form if form is not None else query, raw)
    except MissingSecret as exc:
        raise CallbackMisconfigured(str(exc)) from exc

    # Authenticated: from here on the body is read for what it says.
    if encoding == "form":
        params = form if form is not None else _form_parameters(query, raw)
        parsed = ParsedBody("form", params)
    else:
        try:
            document = parse_document(encoding, raw)
        except UnreadableResponse as exc:
            raise CallbackUnreadable(str(exc)) from exc
        params = dict(query)
        if isinstance(document, dict):
            params.update({k: v for k, v in document.items() if not isinstance(v, dict | list)})
        parsed = ParsedBody(encoding, document)

    fields = extract(parsed, config["extract"], config.get("namespaces"))
    for name, value in fields.items():
        if not _is_single_value(value):
            raise CallbackUnreadable(f"callback field {name} is not a single value")
    return fields, params, raw


def _signs_parameters(check: Mapping[str, Any]) -> bool:
    """Whether a signature covers the callback's fields rather than its raw bytes."""
    return "field" in check or check["canonical"] in ("sorted_values", "sorted_pairs", "template")


def _form_parameters(query: Mapping[str, str], raw: bytes) -> dict[str, Any]:
    """The query string and form fields as one flat map: the only splitting done before a signature
    over fields is verified. Values stay text; a repeated name keeps its last value, both for the
    signature and for what is read afterwards."""
    try:
        text = raw.decode("utf-8") if raw.strip() else ""
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
    except UnicodeDecodeError as exc:
        raise CallbackUnreadable("not form-encoded: the body is not UTF-8") from exc
    except ValueError as exc:
        raise CallbackUnreadable(f"not form-encoded: {str(exc)[:80]}") from exc
    return {**query, **dict(pairs)}


def _utf8(text: str) -> bytes:
    # Lone surrogates are refused later (_unstorable); here they must not turn a rejection into a crash.
    return text.encode("utf-8", errors="surrogatepass")


def _is_single_value(value: Any) -> bool:
    return isinstance(value, str | int | bool) or (isinstance(value, float) and math.isfinite(value))


def _unstorable(value: Any, path: str = "callback") -> str | None:
    """Why a value could not be stored as it is (PostgreSQL's jsonb takes no NUL character, no lone
    surrogate and no non-finite number), or None."""
    if isinstance(value, str):
        if "\x00" in value:
            return f"{path} holds a NUL character"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{path} holds text that is not valid Unicode"
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path} holds a number out of range"
    if isinstance(value, Mapping):
        for key, item in value.items():
            problem = _unstorable(str(key), f"{path} field name") or _unstorable(item, f"{path}.{str(key)[:40]}")
            if problem:
                return problem
    if isinstance(value, list | tuple):
        for item in value:
            problem = _unstorable(item, path)
            if problem:
                return problem
    return None


def _authenticate_request(
    check: Mapping[str, Any],
    secrets: Secrets,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    peer_ip: str | None,
    peer_cert: PeerCertificate | None,
) -> None:
    kind = check["type"]
    if kind == "ip_allow_list":
        try:
            address = ipaddress.ip_address(peer_ip or "")
        except ValueError as exc:
            raise CallbackRejected(f"source address {str(peer_ip)[:45]!r} is not an IP address") from exc
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
        if not hmac.compare_digest(_utf8(decoded), _utf8(expected)):
            raise CallbackRejected("wrong or missing Basic credentials")
    elif kind == "bearer":
        expected = str(secrets.resolve(check["token"]))
        if "query" in check:
            supplied = str(query.get(check["query"], ""))
        else:
            header = check.get("header", "Authorization")
            supplied = headers.get(header.lower(), "")
            if header.lower() == "authorization":
                supplied = supplied[7:] if supplied[:7].lower() == "bearer " else ""
        if not supplied or not hmac.compare_digest(_utf8(supplied.strip()), _utf8(expected)):
            raise CallbackRejected("wrong or missing bearer credential")
    elif kind == "mutual_tls":
        if peer_cert is None:
            raise CallbackRejected("no client certificate (the callback server asks for one only when started "
                                   "with --client-ca)")
        subjects = check.get("subjects")
        if subjects and not set(peer_cert.common_names) & set(subjects):
            raise CallbackRejected("the client certificate's subject is not one this carrier uses")
        pins = {pin.replace(":", "").lower() for pin in check.get("fingerprints_sha256") or []}
        if pins and peer_cert.sha256 not in pins:
            raise CallbackRejected("the client certificate is not one pinned for this carrier")
    else:
        raise CallbackRejected(f"unknown callback check {str(kind)[:20]!r}")


def _verify_signature(
    check: Mapping[str, Any],
    secrets: Secrets,
    method: str,
    headers: Mapping[str, str],
    params: Mapping[str, Any],
    raw: bytes,
) -> None:
    supplied = str(params.get(check["field"], "")) if "field" in check else headers.get(check["header"].lower(), "")
    if not supplied:
        raise CallbackRejected("callback is not signed")
    expected = callback_signature(check, secrets, method, params, raw)
    if check.get("encoding", "hex") == "hex":  # hex is case-insensitive; base64 is not
        supplied, expected = supplied.lower(), expected.lower()
    if not hmac.compare_digest(_utf8(supplied.strip()), _utf8(expected)):
        raise CallbackRejected("callback signature does not match")


def callback_signature(
    check: Mapping[str, Any], secrets: Secrets, method: str, params: Mapping[str, Any], raw: bytes
) -> str:
    """The signature a genuine callback carries, per the spec's `signature` check."""
    signed = {k: v for k, v in params.items() if k != check.get("field")}
    canonical_kind = check["canonical"]
    if canonical_kind == "sorted_values":
        canonical = _utf8("".join(str(signed[key]) for key in sorted(signed)))
    elif canonical_kind == "sorted_pairs":
        separator = check.get("pair_separator", "&")
        canonical = _utf8(separator.join(f"{key}={signed[key]}" for key in sorted(signed)))
    elif canonical_kind == "raw_body":
        canonical = raw  # the bytes as received, before anything reads them
    else:
        context = {"params": signed, "body": raw.decode("utf-8", errors="replace"), "method": method}
        try:
            canonical = _utf8(render_text(check["template"], context))
        except Exception as exc:  # a request missing what the template names cannot be genuine
            raise CallbackRejected(f"callback signature cannot be computed: {type(exc).__name__}") from exc
    key = _utf8(str(secrets.resolve(check["key"])))
    algorithm = check["algorithm"]
    if algorithm.startswith("hmac_"):
        digest = hmac.new(key, canonical, algorithm[5:]).digest()
    else:
        keyed = canonical + key if check.get("key_position", "append") == "append" else key + canonical
        digest = hashlib.new(algorithm, keyed).digest()
    return digest.hex() if check.get("encoding", "hex") == "hex" else base64.b64encode(digest).decode()
