"""The generic HTTP connector: one instance per carrier, driven entirely by the carrier's spec.

`execute(call)` takes one carrier call as `adapter.claim_calls` hands it out and returns the
document `adapter.complete_calls` takes. The connector never raises for carrier trouble: every
failure becomes an outcome, and the outcome errs towards `unknown` whenever a charge might have
been applied, because a double charge is the worst thing this code can do.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from jinja2 import TemplateError
from markupsafe import Markup
from yarl import URL

from carrierpay.adapters.auth import AuthUnavailable, OutgoingRequest, build_auth, build_ssl_context
from carrierpay.adapters.encodings import UnreadableResponse, encode_body, extract, parse_body
from carrierpay.adapters.money import AmountError
from carrierpay.adapters.ratelimit import RateLimiter
from carrierpay.adapters.redact import Redactor
from carrierpay.adapters.reports import ReportNotReady, ReportUnavailable, parse_report
from carrierpay.adapters.results import Decision, decide
from carrierpay.adapters.secrets import MissingSecret, Secrets
from carrierpay.adapters.spec import CarrierSpec, load_spec, steps_of
from carrierpay.adapters.templates import render_text, render_value

CALLBACK_BASE_VARIABLE = "CARRIERPAY_CALLBACK_BASE_URL"
LOGGED_BODY_LIMIT = 8192
CALL_FIELDS = (
    "call_id", "procedure_id", "carrier", "operation", "attempt", "correlator", "msisdn", "amount_minor",
    "currency", "description", "product_code", "merchant_code", "original", "text", "pin",
)  # fmt: skip


@dataclass
class Exchange:
    """One HTTP request/response of an operation, already classified."""

    request_log: dict[str, Any]
    response_log: dict[str, Any] | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    decision: Decision | None = None
    message: str | None = None


class HttpConnector:
    """Speaks one carrier's HTTP dialect as its spec describes it.

    `base_url` overrides the spec's (simulators and sandboxes bind at run time); `callback_url`
    is our callback server's address for carriers that take one per request. Pass an aiohttp
    `session` to share a connection pool; otherwise the connector owns one (use `async with`).
    """

    def __init__(
        self,
        spec: CarrierSpec | Mapping[str, Any] | str,
        secrets: Secrets | Mapping[str, str] | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        base_url: str | None = None,
        callback_url: str | None = None,
    ) -> None:
        self.spec = spec if isinstance(spec, CarrierSpec) else load_spec(spec)
        self.secrets = Secrets.of(secrets)
        self.base_url = (base_url or self.spec.base_url).rstrip("/")
        self.callback_url = callback_url or self._default_callback_url()
        self._session = session
        self._owns_session = session is None
        self.limiter = RateLimiter(self.spec.tps)
        # Built now, not at the first request: an unreadable certificate, key or CA bundle is a
        # configuration error of this carrier (TlsConfigError), never an outcome of a call.
        self._ssl = build_ssl_context(self.spec, self.secrets)
        self.auth = build_auth(self.spec, self.secrets, self._fetch_token, self.base_url)
        self.redactor = Redactor(lambda: [*self.secrets.revealed, *self.auth.revealed])

    def _default_callback_url(self) -> str | None:
        base = os.environ.get(CALLBACK_BASE_VARIABLE)
        if not base:
            return None
        path = (self.spec.data.get("callbacks") or {}).get("path") or f"/callbacks/{self.spec.code}"
        return base.rstrip("/") + path

    async def __aenter__(self) -> HttpConnector:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._owns_session = True
        return self._session

    @property
    def ssl(self) -> Any:
        return True if self._ssl is None else self._ssl

    # ------------------------------------------------------------------ the contract

    async def execute(self, call: Mapping[str, Any]) -> dict[str, Any]:
        """Perform one carrier call; returns the completion document (see docs/carrier-spec.md)."""
        started = time.monotonic()
        call = dict(call)
        result: dict[str, Any] = {
            "call_id": call.get("call_id"),
            "outcome": "unknown",
            "reason": "unknown",
            "carrier_code": None,
            "carrier_message": None,
            "carrier_ref": None,
            "amount_minor": call.get("amount_minor"),
            "balance_minor": None,
            "latency_ms": 0,
            "request": None,
            "response": None,
        }
        name = call.get("operation")
        operation = self.spec.operation(name) if isinstance(name, str) else None
        if operation is None:
            result.update(
                outcome="failed", reason="rejected", carrier_message=f"{self.spec.code} does not offer {name!r}"
            )
            return self._finish(result, started)

        context = self._context(call)
        steps = steps_of(operation)
        timeout = float(operation.get("timeout_s") or self.spec.timeouts["total_s"])
        requests: list[dict[str, Any]] = []
        responses: list[dict[str, Any] | None] = []
        exchange: Exchange | None = None
        decision: Decision | None = None
        for index, step in enumerate(steps):
            exchange = await self._exchange(step, context, timeout, call)
            requests.append(exchange.request_log)
            responses.append(exchange.response_log)
            decision = exchange.decision
            if decision is None:
                where = f"operations.{name}" + (f".steps[{index}]" if "steps" in operation else "")
                decision = decide(
                    [
                        (f"{where}.results", step.get("results") or []),
                        (f"operations.{name}.results", operation.get("results") or []),
                        ("results", self.spec.data.get("results") or []),
                    ],
                    exchange.fields,
                    http_status=(exchange.response_log or {}).get("status"),
                    readable=exchange.message is None,
                )
            context["steps"][step["name"]] = exchange.fields
            context["prev"] = exchange.fields
            if decision.outcome != "succeeded":
                break

        assert exchange is not None and decision is not None
        fields = exchange.fields
        result.update(
            outcome=decision.outcome,
            reason=decision.reason,
            carrier_code=_text_or_none(fields.get("code") if fields.get("code") is not None else fields.get("status")),
            carrier_message=_text_or_none(fields.get("message")) or exchange.message,
            carrier_ref=_text_or_none(_first_value(context["steps"], "carrier_ref")),
        )
        for source, target in (("amount", "amount_minor"), ("balance", "balance_minor")):
            if fields.get(source) is not None:
                try:
                    result[target] = self.spec.minor_units(fields[source])
                except AmountError as exc:
                    result["carrier_message"] = f"{result['carrier_message'] or ''} [{exc}]".strip()
        if name == "lookup":  # the network serving the number now (an HLR/MNP answer)
            result.update({key: str(fields[key]) for key in ("mcc", "mnc") if fields.get(key) not in (None, "")})
        if len(steps) == 1:
            result["request"], result["response"] = requests[0], responses[0]
        else:
            result["request"], result["response"] = {"steps": requests}, {"steps": responses}
        self._report_reservation(operation, context, result)
        return self._finish(result, started)

    @staticmethod
    def _report_reservation(operation: Mapping[str, Any], context: Mapping[str, Any],
                            result: dict[str, Any]) -> None:
        """A two-step operation whose reservation step succeeded: name the reservation in the result, whatever
        the confirmation did. The database keeps it and, when the call can no longer confirm it (failed for
        good, given up, cancelled), queues the carrier's cancel operation once (db/procedures/210_reservations.sql);
        the connector never cancels by itself, so a daemon that dies here leaves nothing half done."""
        two_step = operation.get("two_step")
        if not two_step:
            return
        names = [step["name"] for step in steps_of(operation)]
        executed = len((result["request"] or {}).get("steps") or [])
        if executed <= names.index(two_step["reserve"]) + 1:
            return  # the reservation itself was refused (or not answered): nothing is known to be held
        reference = context["steps"][two_step["reserve"]].get("carrier_ref")
        if reference not in (None, ""):
            result["reservation"] = {"carrier_ref": str(reference)}

    def _finish(self, result: dict[str, Any], started: float) -> dict[str, Any]:
        result["latency_ms"] = int((time.monotonic() - started) * 1000)
        return result

    # ------------------------------------------------------------------ one HTTP exchange

    def _context(self, call: dict[str, Any]) -> dict[str, Any]:
        context: dict[str, Any] = {name: call.get(name) for name in CALL_FIELDS}
        context.update({key: value for key, value in call.items() if key not in context})
        context["currency"] = call.get("currency") or self.spec.currency
        context["amount"] = self.spec.wire_amount(call.get("amount_minor"))
        original = dict(call.get("original") or {})
        original.setdefault("correlator", None)
        original.setdefault("carrier_ref", None)
        original.setdefault("amount_minor", None)
        original["amount"] = self.spec.wire_amount(original.get("amount_minor"))
        context["original"] = original
        context["msisdn_digits"] = "".join(ch for ch in str(call.get("msisdn") or "") if ch.isdigit())
        context["call"] = call
        context["carrier"] = {key: self.spec.data.get(key) for key in ("code", "country", "currency", "timezone")}
        context["callback_url"] = self.callback_url
        context["now"] = datetime.now(UTC)
        context["steps"] = {}
        context["prev"] = {}
        return context

    async def _build_request(self, step: dict[str, Any], context: dict[str, Any]) -> OutgoingRequest:
        spec_request = step["request"]
        auth_vars = await self.auth.template_vars()
        # Credentials we hand to the carrier to present on its callbacks (CAMARA's sinkCredential); resolved
        # through the secrets, so every value is scrubbed from the logged traffic like any other secret.
        credentials = {name: self.secrets.resolve(reference)
                       for name, reference in (self.spec.data.get("credentials") or {}).items()}
        context = {**context, "auth": auth_vars, "credentials": credentials}
        encoding = spec_request.get("encoding", "none" if "body" not in spec_request else "json")
        # Partials are rendered first and marked safe, so an XML partial is not escaped twice.
        context["partials"] = {
            name: Markup(render_text(source, context, xml=encoding == "xml"))
            for name, source in (self.spec.data.get("templates") or {}).items()
        }
        path = render_text(spec_request["path"], context)
        url = URL(path) if path.startswith(("http://", "https://")) else URL(self.base_url + "/" + path.lstrip("/"))
        query = render_value(spec_request.get("query") or {}, context)
        if query:
            url = url.update_query({key: "" if value is None else str(value) for key, value in query.items()})
        headers = {key: str(value) for key, value in render_value(spec_request.get("headers") or {}, context).items()}
        body_source = spec_request.get("body")
        if isinstance(body_source, str):
            body = render_text(body_source, context, xml=encoding == "xml")
        else:
            body = render_value(body_source, context) if body_source is not None else None
        body = self.auth.add_body_fields(body)
        payload, content_type = encode_body(encoding, body)
        if content_type and not any(key.lower() == "content-type" for key in headers):
            headers["Content-Type"] = content_type
        request_secrets = [str(auth_vars[name]) for name in self.auth.secret_vars if auth_vars.get(name)]
        request = OutgoingRequest(method=spec_request["method"], url=url, headers=headers, body=payload,
                                  secrets=request_secrets)
        await self.auth.apply(request)
        return request

    async def _exchange(
        self, step: dict[str, Any], context: dict[str, Any], timeout: float, call: Mapping[str, Any]
    ) -> Exchange:
        call_secrets = sensitive_values(call)
        for attempt in (1, 2):
            try:
                request = await self._build_request(step, context)
            except (TemplateError, MissingSecret, ValueError, TypeError) as exc:
                return Exchange(
                    {"error": "request could not be built"},
                    decision=Decision("failed", "rejected", "builtin: request could not be built"),
                    message=f"request not sent, spec or call is incomplete: {exc}",
                )
            except AuthUnavailable as exc:
                reason = "unreachable" if exc.unreachable else "transient"
                return Exchange(
                    {"error": "credentials unavailable"},
                    decision=Decision("failed", reason, "builtin: credentials unavailable"),
                    message=f"request not sent: {self.redactor.text(str(exc), call_secrets)}",
                )
            extra_secrets = [*call_secrets, *request.secrets]
            request_log = self._request_log(request, extra_secrets)
            await self.limiter.acquire()
            try:
                status, content_type, body, headers = await self._send(request, timeout)
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                # The TCP/TLS connection never came up (refused, unknown host, a certificate we do not
                # trust, a TLS handshake the carrier refused: TLS 1.2 checks our client certificate
                # here): the carrier cannot have seen the request.
                return Exchange(
                    request_log,
                    decision=Decision("failed", "unreachable", "builtin: not connected"),
                    message=f"not sent, could not connect: {self._describe(exc, extra_secrets)}",
                )
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                # Sent (or possibly sent) and no answer: the carrier may have applied it. Under TLS 1.3
                # a server refusing our client certificate says so only after our request was written,
                # which looks exactly like this; it stays unknown and is reconciled.
                kind = "timeout" if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError) else "connection lost"
                return Exchange(
                    request_log,
                    decision=Decision("unknown", "unknown", f"builtin: {kind}"),
                    message=f"{kind} after sending ({self._describe(exc, extra_secrets)}); "
                            "outcome must be reconciled",
                )
            if status == 401 and attempt == 1 and self.auth.invalidate():
                continue
            return self._read(step, status, content_type, body, headers, request_log, extra_secrets)
        raise AssertionError("unreachable")

    def _describe(self, exc: BaseException, extra_secrets: list[str]) -> str:
        """A transport error for the call's log: what failed, where, and the underlying cause."""
        if isinstance(exc, aiohttp.ClientConnectorError):
            cause = exc.os_error
            tls = exc.ssl is not False and self.base_url.startswith("https:")
            text = f"{exc.__class__.__name__} to {exc.host}:{exc.port}{' (TLS)' if tls else ''}: {_error_text(cause)}"
            if tls and isinstance(cause, ConnectionResetError | ConnectionAbortedError | EOFError):
                text += " (the TLS handshake was cut off by the carrier)"
        else:
            text = _error_text(exc)
        return self.redactor.text(text, extra_secrets)

    async def _send(self, request: OutgoingRequest, timeout: float) -> tuple[int, str, bytes, Mapping[str, str]]:
        client_timeout = aiohttp.ClientTimeout(
            total=timeout, connect=min(timeout, self.spec.timeouts["connect_s"]), sock_connect=None
        )
        async with self.session.request(
            request.method,
            request.url,
            headers=request.headers,
            data=request.body,
            timeout=client_timeout,
            ssl=self.ssl,
            allow_redirects=False,
        ) as response:
            body = await response.read()
            return response.status, response.headers.get("Content-Type", ""), body, response.headers

    def _read(
        self,
        step: dict[str, Any],
        status: int,
        content_type: str,
        body: bytes,
        headers: Mapping[str, str],
        request_log: dict[str, Any],
        extra_secrets: list[str],
    ) -> Exchange:
        response_spec = step["response"]
        exchange = Exchange(request_log)
        exchange.response_log = {
            "status": status,
            "content_type": content_type,
            "body": self._body_log(body, content_type, extra_secrets),
        }
        try:
            parsed = parse_body(
                response_spec["format"],
                content_type,
                body,
                content_types=response_spec.get("content_types"),
                allow_empty=bool(response_spec.get("allow_empty")) or status == 204,
            )
        except UnreadableResponse as exc:
            exchange.message = f"unreadable answer (HTTP {status}): {exc}"
            return exchange
        exchange.fields = extract(parsed, response_spec.get("extract") or {}, response_spec.get("namespaces"))
        return exchange

    # ------------------------------------------------------------------ logs

    def _request_log(self, request: OutgoingRequest, extra_secrets: list[str]) -> dict[str, Any]:
        return {
            "method": request.method,
            "url": self.redactor.text(str(request.url), extra_secrets),
            "headers": self.redactor.value(dict(request.headers), extra_secrets),
            "body": self._body_log(request.body or b"", request.headers.get("Content-Type", ""), extra_secrets),
        }

    def _body_log(self, body: bytes, content_type: str, extra_secrets: list[str]) -> Any:
        if not body:
            return None
        text = body[:LOGGED_BODY_LIMIT].decode("utf-8", errors="replace")
        if "json" in content_type:
            try:
                return self.redactor.value(json.loads(body), extra_secrets)
            except ValueError:
                pass
        if "x-www-form-urlencoded" in content_type:
            from urllib.parse import parse_qsl

            try:
                return self.redactor.value(dict(parse_qsl(text, keep_blank_values=True)), extra_secrets)
            except ValueError:
                pass
        return self.redactor.text(text, extra_secrets)

    # ------------------------------------------------------------------ result files

    async def fetch_report(self, **params: Any) -> list[dict[str, Any]]:
        """Download the report the spec's `reports.request` names; `params` join the template context."""
        config = self.spec.data.get("reports")
        if not config:
            raise ReportUnavailable(f"{self.spec.code} publishes no reports")
        context = {**self._context({}), **params}
        try:
            request = await self._build_request({"request": config["request"]}, context)
            await self.limiter.acquire()
            status, _, body, _ = await self._send(request, self.spec.timeouts["total_s"])
            if status == 401 and self.auth.invalidate():
                request = await self._build_request({"request": config["request"]}, context)
                status, _, body, _ = await self._send(request, self.spec.timeouts["total_s"])
        except (AuthUnavailable, TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise ReportUnavailable(f"report download failed: {exc.__class__.__name__}: {exc}") from exc
        if status == 404:
            raise ReportNotReady(f"{self.spec.code}: report {params or ''} is not published yet")
        if status != 200:
            raise ReportUnavailable(f"{self.spec.code}: report download answered HTTP {status}")
        return parse_report(self.spec, body)

    # ------------------------------------------------------------------ OAuth token endpoint

    async def _fetch_token(self, url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[int, Any]:
        timeout = aiohttp.ClientTimeout(total=self.spec.timeouts["total_s"], connect=self.spec.timeouts["connect_s"])
        async with self.session.post(url, data=form, headers=headers, timeout=timeout, ssl=self.ssl) as response:
            try:
                answer = await response.json(content_type=None)
            except ValueError:
                answer = None
            return response.status, answer


def sensitive_values(call: Mapping[str, Any]) -> list[str]:
    """Values of this call that must never reach a log: its PIN, and for a text marked sensitive
    (a PIN SMS) the whole text and every run of 4 to 8 digits in it."""
    values = []
    pin = call.get("pin")
    if pin not in (None, ""):
        values.append(str(pin))
    text = call.get("text")
    if call.get("sensitive") and text:
        values.append(str(text))
        values.extend(re.findall(r"\d{4,8}", str(text)))
    return values


def _error_text(exc: BaseException) -> str:
    detail = str(exc).strip()
    return f"{exc.__class__.__name__}: {detail}" if detail else exc.__class__.__name__


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _first_value(steps: Mapping[str, Mapping[str, Any]], name: str) -> Any:
    """A field from the latest step that has it (a capture may not repeat the reservation's id)."""
    for fields in reversed(list(steps.values())):
        if fields.get(name) is not None:
            return fields[name]
    return None


async def fetch_report(
    spec: CarrierSpec,
    secrets: Secrets | Mapping[str, str] | None = None,
    *,
    session: Any = None,
    base_url: str | None = None,
    **params: Any,
) -> list[dict[str, Any]]:
    """Download and parse one report; `params` (e.g. date="2025-01-06") feed the URL template."""
    async with HttpConnector(spec, secrets, session=session, base_url=base_url) as connector:
        return await connector.fetch_report(**params)
