"""Carrier specs: load `carriers/<code>/carrier.yaml`, validate it, and answer questions about it.

Validation has two layers. The JSON Schema (shipped in the package) checks shapes and names;
the checks here catch what a schema cannot: unknown time zones, templates that do not compile,
JSONPath/XPath expressions that do not parse, regexes that are invalid, and patterns without the
section they depend on. Every error names the JSON path of the offending field.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jsonschema
import yaml
from lxml import etree
from referencing import Registry, Resource

from carrierpay.adapters import schemas
from carrierpay.adapters.encodings import compile_jsonpath
from carrierpay.adapters.money import JsonNumber, format_amount, parse_amount
from carrierpay.adapters.templates import check_template, template_variables
from carrierpay.parsing import yaml_problem
from carrierpay.paths import carriers_root

BASE_URL_VARIABLE = "CARRIERPAY_BASE_URL_{code}"
DEFAULT_AMOUNT = {"format": "major_decimal", "exponent": 2}
DEFAULT_TIMEOUTS = {"connect_s": 5.0, "total_s": 30.0}
TLS_FILE_KEYS = ("ca_bundle", "client_cert", "client_key")
# Callback checks that prove the sender holds something we gave it or agreed with it; an IP
# allow-list only narrows who may try.
CREDENTIAL_CHECKS = frozenset({"signature", "basic", "bearer", "mutual_tls"})


class SpecError(ValueError):
    """A spec that cannot be used; `errors` lists one `path: problem` line per fault."""

    def __init__(self, errors: list[str], source: str | None = None) -> None:
        self.errors = errors
        self.source = source
        head = f"invalid carrier spec {source}" if source else "invalid carrier spec"
        super().__init__(head + ":\n  " + "\n  ".join(errors))


@cache
def _schema_resources() -> tuple[dict[str, Any], Registry]:
    registry = Registry()
    main: dict[str, Any] = {}
    for name in ("carrier.schema.json", "smpp.schema.json"):
        document = schemas.load(name)
        registry = registry.with_resource(document["$id"], Resource.from_contents(document))
        if name == "carrier.schema.json":
            main = document
    return main, registry


def _json_path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def validate_spec(data: Any) -> list[str]:
    """Every problem in a spec as `json.path: message`, schema first; empty when it is usable."""
    schema, registry = _schema_resources()
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    errors = sorted(validator.iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    messages = [f"{_json_path(e.absolute_path)}: {e.message}" for e in errors]
    if messages:
        return messages
    return list(_semantic_errors(data))


def _semantic_errors(data: Mapping[str, Any]) -> Iterable[str]:
    try:
        ZoneInfo(data["timezone"])
    except (ZoneInfoNotFoundError, ValueError):
        yield f"timezone: {data['timezone']!r} is not an IANA time zone"

    auth = data.get("auth") or {}
    if auth.get("type") == "hmac":
        yield from _template_errors("auth.canonical", auth["canonical"])
        for name, value in auth["headers"].items():
            yield from _template_errors(f"auth.headers.{name}", value)

    for name, source in (data.get("templates") or {}).items():
        yield from _template_errors(f"templates.{name}", source)
    yield from _results_errors("results", data.get("results") or [])
    for op_name, operation in data["operations"].items():
        base = f"operations.{op_name}"
        # Over SMPP the asynchronous answer is the delivery receipt, not an HTTP callback.
        if operation["pattern"] == "callback" and "callbacks" not in data and data.get("transport") != "smpp":
            yield f"{base}.pattern: 'callback' needs a top-level 'callbacks' section"
        if operation["pattern"] == "report" and "reports" not in data:
            yield f"{base}.pattern: 'report' needs a top-level 'reports' section"
        if "ttl_s" in operation and op_name != "lookup":
            yield f"{base}.ttl_s: only the lookup operation's answers are kept for a time"
        if "before_charge" in operation and op_name != "lookup":
            yield f"{base}.before_charge: only the lookup operation is asked before a charge"
        if "covers" in operation and op_name != "status":
            yield f"{base}.covers: only the status operation says which operations it reports on"
        two_step = operation.get("two_step")
        if two_step:
            names = [step.get("name") for step in operation.get("steps") or []]
            if two_step["reserve"] not in names[:-1]:
                yield (f"{base}.two_step.reserve: {two_step['reserve']!r} must name a step of this operation that "
                       "later steps confirm")
            if two_step["cancel"] not in data["operations"]:
                yield f"{base}.two_step.cancel: the carrier's {two_step['cancel']!r} operation must be declared"
            if two_step.get("confirm_within_s", 0) >= two_step["expiry_s"]:
                yield (f"{base}.two_step.confirm_within_s: our window to confirm must end before the carrier's "
                       "expiry_s, or a release could reach a reservation the carrier has let lapse")
        yield from _results_errors(f"{base}.results", operation.get("results") or [])
        if data["transport"] != "http":
            continue
        if "request" not in operation and "steps" not in operation:
            yield f"{base}: an HTTP operation needs 'request' and 'response', or 'steps'"
            continue
        for index, step in enumerate(steps_of(operation)):
            where = f"{base}.steps[{index}]" if "steps" in operation else base
            yield from _request_errors(f"{where}.request", step["request"])
            yield from _extract_errors(f"{where}.response", step["response"]["format"], step["response"])
            yield from _results_errors(f"{where}.results", step.get("results") or [])

    callbacks = data.get("callbacks")
    if callbacks is not None:
        yield from _callback_errors(callbacks)
    yield from _credential_errors(data.get("credentials") or {}, callbacks)
    if data.get("mo") is not None:
        yield from _callback_errors(data["mo"], "mo")

    reports = data.get("reports")
    if reports:
        yield from _request_errors("reports.request", reports["request"])
        yield from _results_errors("reports.results", reports.get("results") or [])
        if reports["format"] == "xml":
            namespaces = reports.get("namespaces") or {}
            yield from _xpath_errors("reports.record_xpath", reports["record_xpath"], namespaces)
            for name, expression in reports["columns"].items():
                yield from _xpath_errors(f"reports.columns.{name}", expression, namespaces)


def _credential_errors(credentials: Mapping[str, Any], callbacks: Mapping[str, Any] | None) -> Iterable[str]:
    """A credential handed to the carrier exists to be presented back on its callbacks: one the callbacks do
    not check would let whoever learnt it from the carrier's side settle payments unchecked elsewhere, and
    one without callbacks has no purpose."""
    checked = {check["token"]["secret"] for check in (callbacks or {}).get("auth") or []
               if check.get("type") == "bearer" and isinstance(check.get("token"), Mapping)}
    for name, reference in credentials.items():
        if callbacks is None:
            yield f"credentials.{name}: a credential handed to the carrier needs a 'callbacks' section that checks it"
        elif reference["secret"] not in checked:
            yield (f"credentials.{name}: callbacks.auth must check it: add "
                   f"{{type: bearer, token: {{secret: {reference['secret']}}}}}")


def _callback_errors(callbacks: Mapping[str, Any], section: str = "callbacks") -> Iterable[str]:
    yield from _extract_errors(section, callbacks["encoding"], callbacks)
    yield from _results_errors(f"{section}.results", callbacks.get("results") or [])
    checks = callbacks.get("auth") or []
    if not any(check["type"] in CREDENTIAL_CHECKS for check in checks):
        yield (f"{section}.auth: {section} need a credential check (signature, basic, bearer or mutual_tls); "
               "without one anybody who can reach the callback server could act for a carrier, and an "
               "ip_allow_list alone does not prove who is calling")
    for index, check in enumerate(checks):
        where = f"{section}.auth[{index}]"
        if check["type"] == "ip_allow_list":
            for n, cidr in enumerate(check["cidrs"]):
                try:
                    ipaddress.ip_network(cidr, strict=False)
                except ValueError:
                    yield f"{where}.cidrs[{n}]: {cidr!r} is not an IP address or network"
        if check["type"] != "signature":
            continue
        if check["canonical"] == "template":
            if "template" not in check:
                yield f"{where}.template: required when canonical is 'template'"
                continue
            yield from _template_errors(f"{where}.template", check["template"])
        # A JSON or XML body is never parsed before it is authenticated, so its signature can only
        # be over the raw bytes (a template may use body and method, not the parsed fields).
        if callbacks["encoding"] != "form":
            if "field" in check:
                yield (f"{where}.field: a {callbacks['encoding']} callback is verified before its body is read; "
                       "put the signature in a header")
            if check["canonical"] in ("sorted_values", "sorted_pairs"):
                yield (f"{where}.canonical: a {callbacks['encoding']} callback is verified before its body is "
                       "read; sign the raw body (raw_body, or a template over body and method)")
            if check["canonical"] == "template" and "params" in template_variables(check["template"]):
                yield (f"{where}.template: a {callbacks['encoding']} callback is verified before its body is "
                       "read; the template may use body and method, not params")


def _template_errors(path: str, source: Any) -> Iterable[str]:
    if isinstance(source, str):
        problem = check_template(source)
        if problem:
            yield f"{path}: {problem}"
    elif isinstance(source, Mapping):
        for key, value in source.items():
            yield from _template_errors(f"{path}.{key}", value)
    elif isinstance(source, list):
        for index, value in enumerate(source):
            yield from _template_errors(f"{path}[{index}]", value)


def _request_errors(path: str, request: Mapping[str, Any]) -> Iterable[str]:
    yield from _template_errors(f"{path}.path", request["path"])
    for part in ("query", "headers", "body"):
        if part in request:
            yield from _template_errors(f"{path}.{part}", request[part])
    if request.get("encoding") == "form" and isinstance(request.get("body"), list):
        yield f"{path}.body: a form body is a map of field: template"


def _extract_errors(path: str, fmt: str, section: Mapping[str, Any]) -> Iterable[str]:
    namespaces = section.get("namespaces") or {}
    for name, expression in (section.get("extract") or {}).items():
        where = f"{path}.extract.{name}"
        if fmt == "xml":
            yield from _xpath_errors(where, expression, namespaces)
        else:
            try:
                compile_jsonpath(expression)
            except Exception as exc:  # jsonpath-ng raises several unrelated types
                yield f"{where}: invalid JSONPath {expression!r}: {exc}"


def _xpath_errors(path: str, expression: str, namespaces: Mapping[str, str]) -> Iterable[str]:
    try:
        etree.XPath(expression, namespaces=dict(namespaces))
    except etree.XPathError as exc:
        yield f"{path}: invalid XPath {expression!r}: {exc}"


def _results_errors(path: str, results: list[Mapping[str, Any]]) -> Iterable[str]:
    for index, rule in enumerate(results):
        for name, matcher in rule["when"].items():
            if isinstance(matcher, Mapping) and "regex" in matcher:
                try:
                    re.compile(matcher["regex"])
                except re.error as exc:
                    yield f"{path}[{index}].when.{name}.regex: {exc}"
        if rule["outcome"] == "succeeded" and rule["when"].get("match_unparsed"):
            yield f"{path}[{index}].when.match_unparsed: an unreadable answer can never mean success"


def steps_of(operation: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An operation's steps; a single-request operation is one step named after nothing."""
    if "steps" in operation:
        return list(operation["steps"])
    return [{"name": "main", "request": operation["request"], "response": operation["response"]}]


@dataclass
class CarrierSpec:
    """A validated spec. `data` keeps the document as written; the properties give defaults."""

    data: dict[str, Any]
    path: Path | None = None
    base_url: str = ""
    directory: Path | None = field(default=None, repr=False)

    @property
    def code(self) -> str:
        return self.data["code"]

    @property
    def currency(self) -> str:
        return self.data["currency"]

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.data["timezone"])

    @property
    def tps(self) -> int:
        return int(self.data["throughput"]["tps"])

    @property
    def amount(self) -> dict[str, Any]:
        return {**DEFAULT_AMOUNT, **(self.data.get("amount") or {})}

    def wire_amount(self, amount_minor: int | None) -> str | int | JsonNumber | None:
        """Minor units as this carrier writes an amount (`amount.format`, `amount.exponent`)."""
        amount = self.amount
        return format_amount(amount_minor, amount["format"], amount["exponent"])

    def minor_units(self, value: Any) -> int | None:
        """An amount as this carrier writes it, in minor units (None for none); raises AmountError."""
        amount = self.amount
        return parse_amount(value, amount["format"], amount["exponent"])

    @property
    def timeouts(self) -> dict[str, float]:
        return {**DEFAULT_TIMEOUTS, **(self.data.get("timeouts") or {})}

    @property
    def operations(self) -> dict[str, dict[str, Any]]:
        return self.data["operations"]

    def operation(self, name: str) -> dict[str, Any] | None:
        return self.operations.get(name)

    def resolve_path(self, value: str) -> str:
        """File names in a spec (CA bundles, client certs) are relative to the spec's folder."""
        candidate = Path(value)
        if not candidate.is_absolute() and self.directory is not None:
            candidate = self.directory / candidate
        return str(candidate)

    def stored_document(self) -> dict[str, Any]:
        """The document to onboard (`admin.onboard_carrier`). A stored spec has no folder, so TLS file
        names written relative to carrier.yaml become absolute; names held in secrets stay as they are."""
        document = copy.deepcopy(self.data)
        tls = document.get("tls") or {}
        for key in TLS_FILE_KEYS:
            if isinstance(tls.get(key), str):
                tls[key] = str(Path(self.resolve_path(tls[key])).resolve())
        return document


def spec_file(code: str) -> Path:
    return carriers_root() / code / "carrier.yaml"


def load_spec(
    source: str | Path | Mapping[str, Any],
    *,
    base_url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> CarrierSpec:
    """Load and validate a spec from a carrier code, a YAML/JSON file, or an already-parsed mapping.

    The base URL is taken from, in order: the `base_url` argument, the environment variable
    CARRIERPAY_BASE_URL_<CODE>, the spec. Simulators and sandboxes bind ports at run time, so the
    address must be overridable without editing the file.
    """
    environ = os.environ if environ is None else environ
    path: Path | None = None
    if isinstance(source, Mapping):
        data = copy.deepcopy(dict(source))
        label = f"<{data.get('code', 'mapping')}>"
    else:
        path = Path(source)
        if not path.suffix and not path.exists():
            path = spec_file(str(source))
        if path.is_dir():
            path = path / "carrier.yaml"
        label = str(path)
        try:
            data = yaml.safe_load(path.read_text())
        except FileNotFoundError as exc:
            raise SpecError([f"(file): {path} does not exist"], label) from exc
        except yaml.YAMLError as exc:
            raise SpecError([f"not valid YAML at {yaml_problem(exc)}"], label) from None
    errors = validate_spec(data)
    if errors:
        raise SpecError(errors, label)
    override = base_url or environ.get(BASE_URL_VARIABLE.format(code=data["code"].upper()))
    return CarrierSpec(
        data=data,
        path=path,
        base_url=(override or data.get("base_url") or "").rstrip("/"),
        directory=path.parent if path else None,
    )
