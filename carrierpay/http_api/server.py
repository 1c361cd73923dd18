"""`carrierpay api serve`: the merchant HTTP API (CAMARA Carrier Billing), a thin layer over the SQL API.

    POST /oauth2/token                                    client credentials -> bearer token
    POST /carrier-billing/v0.5/payments                   createPayment
    GET  /carrier-billing/v0.5/payments                   retrievePayments
    GET  /carrier-billing/v0.5/payments/{paymentId}       retrievePayment
    POST /carrier-billing/v0.5/payments/prepare           preparePayment (a held charge)
    POST /carrier-billing/v0.5/payments/{paymentId}/validate|confirm|cancel
    POST|GET /carrierpay/v1/subscriptions, GET /carrierpay/v1/subscriptions/{id}, POST …/{id}/cancel
    POST /carrierpay/v1/consents, POST /carrierpay/v1/consents/{id}/validate
    POST /carrierpay/v1/balance-checks, GET /carrierpay/v1/balance-checks/{id}
    POST /carrier-billing-refund/v0.3/payments/{paymentId}/refunds                      createRefund
    GET  /carrier-billing-refund/v0.3/payments/{paymentId}/refunds                      retrieveRefunds
    GET  /carrier-billing-refund/v0.3/payments/{paymentId}/refunds/{refundId}           retrieveRefund
    GET  /carrier-billing-refund/v0.3/payments/{paymentId}/refunds/remaining-amount     retrievePaymentRemainingAmount
    GET  /openapi.yaml                                    the document describing all of it
    GET  /health                                          200 when the database answers

Each operation is one transaction on a pooled connection of the gateway login: `gateway.authenticate`
turns the bearer token into the merchant's role and the statement sets that role for the transaction
(`set_config('role', …, true)`), then exactly one `api.*` function runs as the merchant, with the
request body passed as received (jsonb: decimal amounts stay exact). Rules, statuses and amounts
are the database's; this module checks the request's shape against the OpenAPI document, maps
SQLSTATEs through `carrierpay.http_api.errors` and echoes `x-correlator`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import logging
import os
import re
import signal
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import yaml
from aiohttp import web
from openapi_schema_validator import OAS30Validator

from carrierpay import queries
from carrierpay.guarded_http import GuardedServer, HttpLimits
from carrierpay.http_api import errors
from carrierpay.http_api.ratelimit import DEFAULT_REQUESTS_PER_SECOND, RateLimiter, retry_after
from carrierpay.lifecycle import install_stop_handlers

log = logging.getLogger("carrierpay.api")
OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")
X_CORRELATOR = re.compile(r"^[a-zA-Z0-9-_:;./<>{}]{0,256}$")
MAX_BODY_BYTES = 64 * 1024
TOKEN_TTL_SECONDS = 900


class ApiError(Exception):
    """An answer in CAMARA's error shape."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def _strip_multiple_of(node: Any) -> Any:
    # CAMARA writes `multipleOf: 0.001` on amounts; checked with binary floats it refuses exact values
    # such as 0.29. Whether an amount has too many decimals is the currency's business, decided in SQL.
    # Bounds become Decimals too: request numbers are parsed as Decimal, and Decimal('0.001') is less
    # than the float 0.001.
    if isinstance(node, dict):
        return {k: _strip_multiple_of(v) for k, v in node.items() if k != "multipleOf"}
    if isinstance(node, list):
        return [_strip_multiple_of(v) for v in node]
    if isinstance(node, float):
        return Decimal(repr(node))
    return node


@dataclass(frozen=True)
class Operation:
    operation_id: str
    scope: str | None
    body_schema: str | None  # a $ref into components, or None when the operation takes no body


class Document:
    """The served OpenAPI document: its text, and per operation its scope and request body schema."""

    def __init__(self, path: Path = OPENAPI_PATH):
        self.text = path.read_bytes()
        self.doc = yaml.safe_load(self.text)
        self.components = _strip_multiple_of(copy.deepcopy(self.doc["components"]))
        self.operations: dict[str, Operation] = {}
        for item in self.doc["paths"].values():
            for method, op in item.items():
                if method not in ("get", "post", "put", "patch", "delete"):
                    continue
                scopes = [s for req in op.get("security", []) for s in req.get("openId", [])]
                body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
                self.operations[op["operationId"]] = Operation(op["operationId"], scopes[0] if scopes else None,
                                                               body.get("$ref") if body else None)
        self._validators: dict[str, OAS30Validator] = {}

    def validator(self, ref: str) -> OAS30Validator:
        if ref not in self._validators:
            self._validators[ref] = OAS30Validator({"$ref": ref, "components": self.components})
        return self._validators[ref]


def _parse_json(raw: bytes) -> Any:
    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(raw, parse_float=Decimal, parse_constant=no_constants)


def _check_sink(body: dict) -> None:
    """CAMARA's own codes for a sink or sink credential it does not accept (before the generic schema check)."""
    sink = body.get("sink")
    if isinstance(sink, str) and not re.match(r"^https://[^\s/?#]+", sink):
        raise ApiError(400, "INVALID_SINK", "sink not valid for the specified protocol: an https URL is required")
    credential = body.get("sinkCredential")
    if isinstance(credential, dict):
        kind = credential.get("credentialType")
        if isinstance(kind, str) and kind != "ACCESSTOKEN":
            raise ApiError(400, "INVALID_CREDENTIAL", "Only Access token is supported")
        token_type = credential.get("accessTokenType")
        if isinstance(token_type, str) and token_type != "bearer":
            raise ApiError(400, "INVALID_TOKEN", "Only bearer token is supported")
        if kind == "ACCESSTOKEN" and not all(isinstance(credential.get(k), str)
                                             for k in ("accessToken", "accessTokenExpiresUtc", "accessTokenType")):
            raise ApiError(400, "INVALID_ARGUMENT", "sinkCredential needs accessToken, accessTokenExpiresUtc and "
                                                    "accessTokenType")


Handler = Callable[[web.Request, psycopg.AsyncConnection, dict, Any], Awaitable[web.Response]]


class ApiServer(GuardedServer):
    """An aiohttp application bound to the database; `start()` listens, `stop()` closes."""

    def __init__(self, url: str, *, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None,
                 pool_size: int = 8, limits: HttpLimits | None = None, document: Document | None = None,
                 rate_limit: float = DEFAULT_REQUESTS_PER_SECOND, processes: int = 1,
                 reuse_port: bool = False) -> None:
        super().__init__(url, host=host, port=port, ssl_context=ssl_context, pool_size=pool_size,
                         limits=limits or HttpLimits(max_body_bytes=MAX_BODY_BYTES), reuse_port=reuse_port)
        self.document = document or Document()
        # `processes`: how many servers share this one's port; each counts its share of every limit.
        self.limiter = RateLimiter(rate_limit, processes)
        self._first_use: dict[str, asyncio.Future] = {}
        self.counts = {"ok": 0, "client_error": 0, "server_error": 0}

    # ------------------------------------------------------------------ lifecycle

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.listener.limits.max_body_bytes,
                              middlewares=[self._errors, self.listener.middleware])
        cb = "/carrier-billing/v0.5"
        app.router.add_post("/oauth2/token", self.token)
        app.router.add_get("/openapi.yaml", self.openapi)
        app.router.add_get("/health", self.health)
        app.router.add_post(f"{cb}/payments", self._operation("createPayment", None,
                                                              pipelined=(queries.HTTP_CREATE_PAYMENT_LOCAL, 201)))
        app.router.add_get(f"{cb}/payments", self._operation("retrievePayments", self.retrieve_payments))
        app.router.add_get(f"{cb}/payments/{{paymentId}}",
                           self._operation("retrievePayment", _one_document(queries.HTTP_READ_PAYMENT, 200)))
        app.router.add_post(f"{cb}/payments/prepare",
                            self._operation("preparePayment", _one_document(queries.HTTP_PREPARE_PAYMENT, 201)))
        for step, status in (("validate", 204), ("confirm", 202), ("cancel", 202)):
            app.router.add_post(f"{cb}/payments/{{paymentId}}/{step}",
                                self._operation(f"{step}Payment", self._second_step(step, status)))
        rf = "/carrier-billing-refund/v0.3/payments/{paymentId}/refunds"
        app.router.add_post(rf, self._operation("createRefund", _one_document(queries.HTTP_CREATE_REFUND, 201)))
        app.router.add_get(rf, self._operation("retrieveRefunds", self.retrieve_refunds))
        # Before {refundId}, which would match it too.
        app.router.add_get(f"{rf}/remaining-amount", self._operation(
            "retrievePaymentRemainingAmount", _one_document(queries.HTTP_READ_REMAINING_AMOUNT, 200)))
        app.router.add_get(f"{rf}/{{refundId}}",
                           self._operation("retrieveRefund", _one_document(queries.HTTP_READ_REFUND, 200)))
        ext = "/carrierpay/v1"
        for method, path, operation_id, sql, status in (
                ("POST", "/subscriptions", "createSubscription", queries.HTTP_CREATE_SUBSCRIPTION, 201),
                ("GET", "/subscriptions/{subscriptionId}", "retrieveSubscription", queries.HTTP_READ_SUBSCRIPTION, 200),
                ("POST", "/subscriptions/{subscriptionId}/cancel", "cancelSubscription",
                 queries.HTTP_CANCEL_SUBSCRIPTION, 200),
                ("POST", "/consents", "createConsent", queries.HTTP_CREATE_CONSENT, 201),
                ("POST", "/consents/{consentId}/validate", "validateConsent", queries.HTTP_VALIDATE_CONSENT, 200),
                ("POST", "/balance-checks", "createBalanceCheck", queries.HTTP_CREATE_BALANCE_CHECK, 201),
                ("GET", "/balance-checks/{balanceCheckId}", "retrieveBalanceCheck",
                 queries.HTTP_READ_BALANCE_CHECK, 200)):
            app.router.add_route(method, ext + path, self._operation(operation_id, _one_document(sql, status)))
        app.router.add_get(f"{ext}/subscriptions",
                           self._operation("retrieveSubscriptions", self.retrieve_subscriptions))
        return app

    # ------------------------------------------------------------------ plumbing

    @staticmethod
    def _correlator(request: web.Request) -> str | None:
        value = request.headers.get("x-correlator")
        return value if value is not None and X_CORRELATOR.match(value) else None

    def _error(self, request: web.Request, status: int, code: str, message: str,
               headers: dict[str, str] | None = None) -> web.Response:
        self.counts["server_error" if status >= 500 else "client_error"] += 1
        response = web.json_response({"status": status, "code": code, "message": message}, status=status,
                                     headers=headers)
        correlator = self._correlator(request)
        if correlator is not None:
            response.headers["x-correlator"] = correlator
        return response

    @web.middleware
    async def _errors(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        """Every answer, aiohttp's own refusals included (unknown path, body too large), in CAMARA's shape."""
        try:
            response = await handler(request)
        except ApiError as exc:
            return self._error(request, exc.status, exc.code, exc.message, exc.headers)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = {401: "UNAUTHENTICATED", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "INVALID_ARGUMENT",
                    415: "INVALID_ARGUMENT"}.get(exc.status, "INVALID_ARGUMENT" if exc.status < 500 else "INTERNAL")
            status = 400 if exc.status == 413 else exc.status
            return self._error(request, status, code, exc.reason or "request refused")
        if response.status < 400 and isinstance(response, web.Response):
            self.counts["ok"] += 1
        return response

    def _operation(self, operation_id: str, handler: Handler | None, pipelined: tuple[str, int] | None = None
                   ) -> Callable[[web.Request], Awaitable[web.Response]]:
        """`pipelined`: the operation's one statement (reading the merchant from the settings
        HTTP_AUTHENTICATE_LOCAL makes) and its status; sent with the authentication in one round trip."""
        operation = self.document.operations[operation_id]

        async def run(request: web.Request) -> web.Response:
            if "x-correlator" in request.headers and self._correlator(request) is None:
                raise ApiError(400, "INVALID_ARGUMENT", "x-correlator does not match its schema")
            token = _bearer(request)
            known = self.limiter.client_of(token)
            first = None
            if known is None:
                # A token not seen yet: its first request finds out whose it is, the others wait for that
                # so that a burst on a fresh token is counted like any other.
                waiting = self._first_use.get(token)
                if waiting is not None:
                    await asyncio.shield(waiting)
                    known = self.limiter.client_of(token)
                elif len(self._first_use) < 10_000:
                    first = self._first_use[token] = asyncio.get_running_loop().create_future()
            if known is not None:
                self._count(*known)
            try:
                return await self._run(request, operation, handler, pipelined, token, known)
            finally:
                if first is not None:
                    del self._first_use[token]
                    first.set_result(None)

        return run

    async def _run(self, request: web.Request, operation: Operation, handler: Handler | None,
                   pipelined: tuple[str, int] | None, token: str, known: tuple[str, int | None] | None
                   ) -> web.Response:
        operation_id = operation.operation_id
        body = None
        if operation.body_schema is not None:
            body = await self._body(request, operation.body_schema)
        try:
            if pipelined is not None:
                sql, status = pipelined
                async with self.pool.connection(timeout=5) as conn:
                    # No BEGIN/COMMIT: statements pipelined up to one sync run as one implicit
                    # transaction, which also ends what the settings above apply to.
                    async with conn.pipeline():
                        auth = await conn.execute(queries.HTTP_AUTHENTICATE_LOCAL,
                                                  {"token": token, "scope": operation.scope})
                        cur = await conn.execute(sql, {"request": body})
                    identity = await auth.fetchone()
                    response = _json((await cur.fetchone())[0], status)
                if known is None:
                    # The payment is made by now: this request is counted, and the next ones wait their turn.
                    self._learn(token, identity[3], identity[4], refuse=False)
                elif known[1] != identity[4]:
                    self.limiter.learn(token, identity[3], identity[4])
            else:
                async with self.pool.connection(timeout=5) as conn, conn.transaction():
                    cur = await conn.execute(queries.HTTP_AUTHENTICATE, {"token": token,
                                                                         "scope": operation.scope})
                    identity = await cur.fetchone()
                    if known is None:
                        self._learn(token, identity[3], identity[4])
                    elif known[1] != identity[4]:
                        self.limiter.learn(token, identity[3], identity[4])
                    response = await handler(request, conn, {"merchant": identity[0],
                                                             "default_product": identity[1]}, body)
        except psycopg.Error as exc:
            status, code = errors.for_sqlstate(exc.sqlstate)
            if status >= 500:
                if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
                    status, code = errors.UNAVAILABLE
                log.error("%s failed: %s", operation_id, str(exc).splitlines()[0][:200] if str(exc) else exc)
                raise ApiError(status, code, errors.MESSAGES[status]) from None
            message = exc.diag.message_primary if exc.diag and exc.diag.message_primary else code
            if status == 401:
                message = errors.MESSAGES[401]
            raise ApiError(status, code, message) from None
        except TimeoutError:
            raise ApiError(*errors.UNAVAILABLE, errors.MESSAGES[503]) from None
        correlator = self._correlator(request)
        if correlator is not None:
            response.headers["x-correlator"] = correlator
        return response

    def _count(self, client_id: str, per_second: int | None) -> None:
        """One request of the client against its limit; over it, 429 as CAMARA's Generic429 says."""
        wait = self.limiter.take(client_id, per_second)
        if wait is not None:
            self.counts["rate_limited"] = self.counts.get("rate_limited", 0) + 1
            raise ApiError(429, "TOO_MANY_REQUESTS", "Rate limit reached.", {"Retry-After": retry_after(wait)})

    def _learn(self, token: str, client_id: str, per_second: int | None, *, refuse: bool = True) -> None:
        """A token seen for the first time: its request counts now, and the ones after it before they run."""
        self.limiter.learn(token, client_id, per_second)
        if refuse:
            self._count(client_id, per_second)
        else:
            self.limiter.take(client_id, per_second)

    async def _body(self, request: web.Request, schema_ref: str) -> Any:
        raw = await request.read()
        if not raw:
            raise ApiError(400, "INVALID_ARGUMENT", "a JSON request body is required")
        if request.content_type != "application/json":
            raise ApiError(400, "INVALID_ARGUMENT", "the request body must be application/json")
        try:
            body = _parse_json(raw)
        except (ValueError, RecursionError):
            raise ApiError(400, "INVALID_ARGUMENT", "the request body is not valid JSON") from None
        if isinstance(body, dict):
            _check_sink(body)
        refs = [schema_ref]
        # A discriminated schema (createRefund's `type`): the variant named must hold too, which the
        # OpenAPI 3.0 validator does not check by itself.
        discriminator = self.document.components["schemas"][schema_ref.rsplit("/", 1)[1]].get("discriminator")
        if discriminator and isinstance(body, dict):
            variant = discriminator.get("mapping", {}).get(body.get(discriminator["propertyName"]))
            if isinstance(variant, str):
                refs.append(variant)
        for ref in refs:
            validator = self.document.validator(ref)
            # is_valid is about twice as fast as looking for the first error; errors are looked for only
            # in a body already known to have one.
            if validator.is_valid(body):
                continue
            error = next(iter(validator.iter_errors(body)), None)
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path) or "body"
                raise ApiError(400, "INVALID_ARGUMENT", f"{where[:80]}: {str(error.message)[:120]}")
        # The database reads the body as sent, so its numbers are never turned into floats on the way.
        return raw.decode("utf-8")

    # ------------------------------------------------------------------ operations

    async def retrieve_payments(self, request: web.Request, conn: psycopg.AsyncConnection, who: dict,
                                body: Any) -> web.Response:
        return await _page(conn, queries.HTTP_LIST_PAYMENTS, request, "payment", who)

    def _second_step(self, step: str, status: int) -> Handler:
        sql = {"validate": queries.HTTP_VALIDATE_PAYMENT, "confirm": queries.HTTP_CONFIRM_PAYMENT,
               "cancel": queries.HTTP_CANCEL_PAYMENT}[step]

        async def run(request: web.Request, conn: psycopg.AsyncConnection, who: dict, body: Any) -> web.Response:
            await conn.execute(sql, {**who, "payment_id": request.match_info["paymentId"], "request": body})
            # No body, but the media type CAMARA's test definitions expect of every answer.
            return web.Response(status=status, content_type="application/json")

        return run

    async def retrieve_subscriptions(self, request: web.Request, conn: psycopg.AsyncConnection, who: dict,
                                     body: Any) -> web.Response:
        return await _page(conn, queries.HTTP_LIST_SUBSCRIPTIONS, request, "subscription", who, dates=False)

    async def retrieve_refunds(self, request: web.Request, conn: psycopg.AsyncConnection, who: dict,
                               body: Any) -> web.Response:
        return await _page(conn, queries.HTTP_LIST_REFUNDS, request, "refund",
                           {**who, "payment_id": request.match_info["paymentId"]})

    # ------------------------------------------------------------------ token, document, health

    async def token(self, request: web.Request) -> web.Response:
        """OAuth2 client credentials (client_secret_basic or client_secret_post); errors as OAuth2 says."""
        form = await request.post() if request.content_type == "application/x-www-form-urlencoded" else {}
        if form.get("grant_type") != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type" if form.get("grant_type") else "invalid_request",
                                "grant_type=client_credentials (form-encoded) is required")
        client_id, secret = _basic_credentials(request)
        if client_id is None:
            client_id, secret = form.get("client_id"), form.get("client_secret")
        if not isinstance(client_id, str) or not isinstance(secret, str):
            return _oauth_error(401, "invalid_client", "client authentication is required")
        # Counted before the secret is checked: guessing secrets is held to the client's limit too.
        wait = self.limiter.take(client_id[:128], self.limiter.limit_of(client_id))
        if wait is not None:
            self.counts["rate_limited"] = self.counts.get("rate_limited", 0) + 1
            response = _oauth_error(429, "temporarily_unavailable", "Rate limit reached.")
            response.headers["Retry-After"] = retry_after(wait)
            return response
        scope = form.get("scope")
        try:
            async with self.pool.connection(timeout=5) as conn:
                cur = await conn.execute(queries.HTTP_ISSUE_TOKEN, {"client_id": client_id, "secret": secret,
                                                                    "scope": scope, "ttl": TOKEN_TTL_SECONDS})
                answer = (await cur.fetchone())[0]
        except psycopg.Error as exc:
            if exc.sqlstate == "CP110":
                return _oauth_error(401, "invalid_client", "invalid client credentials")
            if exc.sqlstate == "CP117":
                return _oauth_error(400, "invalid_scope", exc.diag.message_primary or "invalid scope")
            if exc.sqlstate and exc.sqlstate[:2] == "22":
                return _oauth_error(400, "invalid_request", "malformed request")
            log.error("token request failed: %s", str(exc).splitlines()[0][:200] if str(exc) else exc)
            return _oauth_error(503, "temporarily_unavailable", "try again later")
        except TimeoutError:
            return _oauth_error(503, "temporarily_unavailable", "try again later")
        # Once the client's limit is known here, its new token's first request is counted before it runs too.
        if self.limiter.knows(client_id):
            self.limiter.learn(json.loads(answer)["access_token"], client_id, self.limiter.limit_of(client_id))
        return web.Response(text=answer, status=200, content_type="application/json",
                            headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=self.document.text, content_type="application/yaml")


def _one_document(sql: str, status: int) -> Handler:
    """An operation whose answer is the one document its SQL function returns (path parameters by name)."""

    async def run(request: web.Request, conn: psycopg.AsyncConnection, who: dict, body: Any) -> web.Response:
        cur = await conn.execute(sql, {**who, **request.match_info, "request": body})
        return _json((await cur.fetchone())[0], status)

    return run


async def _page(conn: psycopg.AsyncConnection, sql: str, request: web.Request, noun: str,
                params: dict, *, dates: bool = True) -> web.Response:
    """One page of a CAMARA list (payments or refunds) with its X-Total-Count and Content-Last-Key."""
    q = request.query
    statuses = q.getall(f"{noun}Status", []) or None
    if statuses and len(statuses) == 1 and "," in statuses[0]:
        statuses = statuses[0].split(",")
    try:
        page = int(q.get("page", "1"))
        per_page = int(q.get("perPage", "10"))
    except ValueError:
        raise ApiError(400, "INVALID_ARGUMENT", "page and perPage must be integers") from None
    if dates:
        params = {**params, "from": _date_time(q, f"{noun}CreationDate.gte"),
                  "to": _date_time(q, f"{noun}CreationDate.lte"), "order": q.get("order", "desc"),
                  "merchant_identifier": q.get("merchantIdentifier")}
    cur = await conn.execute(sql, {**params, "statuses": statuses, "page": page, "per_page": per_page})
    total, last_index, items = await cur.fetchone()
    response = _json(items, 200)
    response.headers["X-Total-Count"] = str(total)
    response.headers["Content-Last-Key"] = str(last_index)
    return response


def _date_time(query: Any, name: str) -> str | None:
    """An RFC 3339 date-time with its time zone, as the document's `format: date-time` says; PostgreSQL
    alone would also take words such as 'yesterday'."""
    value = query.get(name)
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None or "T" not in value.upper():
        raise ApiError(400, "INVALID_ARGUMENT", f"{name} must be an RFC 3339 date-time with a time zone")
    return value


def _json(text: str, status: int) -> web.Response:
    return web.Response(text=text, status=status, content_type="application/json")


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    headers = {"Cache-Control": "no-store"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="carrierpay"'
    return web.json_response({"error": error, "error_description": description}, status=status, headers=headers)


def _bearer(request: web.Request) -> str:
    value = request.headers.get("Authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip() or len(token) > 512:
        raise ApiError(*errors.UNAUTHENTICATED, errors.MESSAGES[401])
    return token.strip()


def _basic_credentials(request: web.Request) -> tuple[str | None, str | None]:
    value = request.headers.get("Authorization", "")
    scheme, _, encoded = value.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        client_id, _, secret = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return None, None
    return client_id, secret


async def serve(url: str, *, host: str = "127.0.0.1", port: int = 8443, cert: str | None = None,
                key: str | None = None, limits: HttpLimits | None = None, stop: asyncio.Event | None = None,
                rate_limit: float = DEFAULT_REQUESTS_PER_SECOND, processes: int = 1) -> None:
    """Serve until stopped (SIGTERM/SIGINT), logging counts every minute. `processes`: how many servers share
    the port (see serve_processes)."""
    from carrierpay.adapters.callback_server import server_ssl_context

    stop = stop or asyncio.Event()
    install_stop_handlers(stop)
    context = server_ssl_context(cert, key) if cert and key else None
    async with ApiServer(url, host=host, port=port, ssl_context=context, limits=limits, rate_limit=rate_limit,
                         processes=processes, reuse_port=processes > 1) as server:
        log.info("merchant API listening on %s (document at %s/openapi.yaml)", server.base_url, server.base_url)
        await server.log_counts_until(stop, log, "api")


def serve_processes(url: str, *, processes: int, **options: Any) -> None:
    """`processes` servers on one port (SO_REUSEPORT: the kernel spreads new connections among them), so the
    API uses as many cores as it is given; each counts its share of every client's request limit. Forked
    before any event loop exists; SIGTERM to this process stops them all."""
    if processes <= 1:
        _run(serve(url, processes=1, **options))
        return
    if not options.get("port"):
        raise ValueError("several processes share a port only when it is given (not 0)")
    children = []
    for _ in range(processes - 1):
        pid = os.fork()
        if pid == 0:  # a worker: serve until SIGTERM, then leave without running the parent's cleanup
            code = 0
            try:
                _run(serve(url, processes=processes, **options))
            except BaseException:  # noqa: BLE001 - a worker's end is its exit code
                log.exception("API worker %s failed", os.getpid())
                code = 1
            os._exit(code)
        children.append(pid)
    try:
        _run(serve(url, processes=processes, **options))
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _run(main: Awaitable[None]) -> None:
    """The server's event loop: uvloop where it is installed (less CPU per request than asyncio's own loop,
    which matters where the API shares its cores), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)
