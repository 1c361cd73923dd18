"""CAMARA's own Gherkin test definitions (tests/http_api/camara_features/, vendored unchanged) run with
pytest-bdd against a real server and database; the step definitions are ours.

One database and one API server serve the module; each scenario gets its own API client and token, and
its own subscriber numbers, so scenarios do not see each other's payments. A scenario that cannot apply
to carrierpay is skipped with its reason (SKIPPED below, or `pytest.skip` in a step that needs what we
documentedly do not offer); docs/http-api.md gives the counts.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg
import psycopg.types.json
import pytest
import requests
from pytest_bdd import given, parsers, scenarios, then, when
from pytest_postgresql.janitor import DatabaseJanitor

from carrierpay import migrate
from tests.conftest import SUPERUSER
from tests.core.world import load_world
from tests.http_api.kit import DOCUMENT, add_client, gateway_url, handset_pin, settle
from tests.http_api.test_fuzz import ServerThread

FEATURES = Path(__file__).with_name("camara_features")

THREE_LEGGED = ("carrierpay issues tokens to merchants only (client credentials, docs/http-api.md), never a "
                "token for one subscriber's phone number (3-legged)")
SYNC = "carrierpay's operators behave asynchronously: a payment or refund is processing until the carrier answers"
# Scenarios whose test definition asks for an answer the API definition of the same release does not give:
# the API definition is what carrierpay follows (docs/http-api.md).
SKIPPED = {
    "create_payment_12_sync_behaviour": SYNC,
    "create_refund_11_sync_behaviour": SYNC,
    "create_payment_422.01_phoneNumber_required": (
        "expects CARRIER_BILLING.PHONE_NUMBER_REQUIRED, which carrier-billing.yaml v0.5.0 does not define; the "
        "same request is C02.04, answered 422 MISSING_IDENTIFIER as the API definition says"),
    "prepare_payment_422.01_phoneNumber_required": (
        "expects CARRIER_BILLING.PHONE_NUMBER_REQUIRED, which carrier-billing.yaml v0.5.0 does not define; the "
        "same request is C02.04, answered 422 MISSING_IDENTIFIER as the API definition says"),
    "confirm_payment_422.01_phoneNumber_required": (
        "expects CARRIER_BILLING.PHONE_NUMBER_REQUIRED, which carrier-billing.yaml v0.5.0 does not define; the "
        "same request is C02.04, answered 422 MISSING_IDENTIFIER as the API definition says"),
    "cancel_payment_422.01_phoneNumber_required": (
        "expects CARRIER_BILLING.PHONE_NUMBER_REQUIRED, which carrier-billing.yaml v0.5.0 does not define; the "
        "same request is C02.04, answered 422 MISSING_IDENTIFIER as the API definition says"),
    "prepare_payment_14_async_behaviour": (
        "preparing asks nothing of the carrier, so carrierpay answers it at once: reserved, or pending_validation "
        "with validationInfo (prepare_payment_12 and 13)"),
    "prepare_payment_403.02_payment_denied": (
        "preparing takes no money: where the regulation wants consent it answers pending_validation with a PIN, and "
        "the denial comes at confirm (confirm_payment_403.02)"),
    "retrieve_payments_400.02_out_of_range": (
        "expects CARRIER_BILLING.OUT_OF_RANGE, which carrier-billing.yaml v0.5.0 does not define; carrierpay "
        "answers its OUT_OF_RANGE"),
    "retrieve_refunds_400.02_out_of_range": (
        "expects CARRIER_BILLING_REFUND.OUT_OF_RANGE, which carrier-billing-refund.yaml v0.3.0 does not define; "
        "carrierpay answers its OUT_OF_RANGE"),
    "retrieve_payments_400.03_too_many_matching_records": (
        "asks for perPage 1000: carrierpay answers pages of at most 100 and refuses more with OUT_OF_RANGE "
        "(docs/http-api.md), so no query matches too many records for one page"),
    "retrieve_refunds_400.03_too_many_matching_records": (
        "asks for perPage 1000: carrierpay answers pages of at most 100 and refuses more with OUT_OF_RANGE "
        "(docs/http-api.md), so no query matches too many records for one page"),
    "retrieve_refunds_09_refund_status": (
        "filters by the query parameter paymentStatus, which retrieveRefunds does not define (its filter is "
        "refundStatus, tested in tests/http_api/test_refunds.py)"),
    "create_refund_403.02_refund_denied": (
        "carrierpay has no business rule that denies the refund of an eligible payment other than those with their "
        "own codes (422.01 amount, 403.03 refund window, 422.03 payment status)"),
    "create_refund_422.02_accumulated_threshold_amount_overpassed": (
        "carrierpay keeps no regulatory threshold on refunds: a refund is bounded by what is left of its payment "
        "(422.01)"),
    "create_refund_422.04_inconsistent_tax_management": (
        "carrierpay does not compare a refund's isTaxIncluded with its payment's (docs/http-api.md)"),
    "create_refund_422.05_inconsistent_refund_details": (
        "carrierpay does not compare refundDetails with the payment's paymentDetails (docs/http-api.md)"),
    "confirm_payment_400.02_empty_request_body": (
        "the same request as confirm_payment_C02.04 ({} names no phoneNumber), whose 422 MISSING_IDENTIFIER "
        "carrierpay answers"),
    "cancel_payment_400.02_empty_request_body": (
        "the same request as cancel_payment_C02.04 ({} names no phoneNumber), whose 422 MISSING_IDENTIFIER "
        "carrierpay answers"),
    "cancel_payment_C02.05_phone_number_not_supported": (
        "cancelling asks nothing of the carrier, so it is allowed whatever the carrier offers: the payment ends "
        "cancelled"),
    "create_payment_422.02_accumulated_threshold_amount_overpassed": (
        "expects CARRIER_BILLING.AMOUNT_THRESHOLD_OVERPASSED, which carrier-billing.yaml v0.5.0 does not "
        "define; carrierpay answers its CARRIER_BILLING.USER_AMOUNT_THRESHOLD_OVERPASSED"),
    "prepare_payment_422.02_accumulated_threshold_amount_overpassed": (
        "expects CARRIER_BILLING.AMOUNT_THRESHOLD_OVERPASSED, which carrier-billing.yaml v0.5.0 does not "
        "define; carrierpay answers its CARRIER_BILLING.USER_AMOUNT_THRESHOLD_OVERPASSED"),
}


scenarios(str(FEATURES))

MISSING = object()
NG_PREFIX = "+234802"
GB_PREFIX = "+4477009"
NOT_SERVED = "+9991234567"


def _number(prefix: str) -> str:
    return prefix + "".join(random.choice("0123456789") for _ in range(13 - len(prefix)))


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def camara_world(pg_cluster, template_db):
    """A migrated database holding the test world, and an API server on it, for the whole module."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    janitor = DatabaseJanitor(user=SUPERUSER, host="127.0.0.1", port=pg_cluster.port, dbname=name,
                              template_dbname=template_db, password=pg_cluster.password)
    janitor.init()
    url = pg_cluster.url(name)
    migrate.migrate(url)
    with psycopg.connect(url, autocommit=True) as conn:
        load_world(conn)
    thread = ServerThread(gateway_url(url))
    try:
        with thread as base:
            yield {"url": url, "base": base, "server": thread.server}
    finally:
        janitor.drop()


class Scenario:
    """What one scenario has set up, sent and received."""

    def __init__(self, world: dict):
        self.url, self.base, self.server = world["url"], world["base"], world["server"]
        # A merchant of its own: a list shows the scenario's payments and nothing else.
        self.merchant = f"c{uuid.uuid4().hex[:10]}"
        with self.owner() as conn:
            conn.execute("select admin.add_merchant(%s, 'CAMARA scenario')", [self.merchant])
            conn.execute("select admin.add_product(%s, 'gems', '100 gems')", [self.merchant])
            conn.execute("select admin.add_price_point(%s, 'gems', 'one_time', 20000, 'NGN', 'gems_100', "
                         "p_carrier => 'test_ng')", [self.merchant])
            conn.execute("select admin.add_price_point(%s, 'gems', 'one_time', 300, 'GBP', 'gems_100', "
                         "p_carrier => 'test_gb')", [self.merchant])
        self.client = add_client(self.url, self.merchant)
        self.tags: set[str] = set()
        self.token = self.new_token(self.client)
        self.headers: dict[str, str] = {"Authorization": f"Bearer {self.token}"}
        self.resource = ""
        self.body: object = MISSING  # MISSING: the operation's default, built when first needed
        self.raw: bytes | None = None
        self.path_params: dict[str, str] = {}
        self.query: dict[str, str] = {}
        self.phone = _number(NG_PREFIX)
        self.payment: dict | None = None
        self.payments: list[dict] = []
        self.refund: dict | None = None
        self.refunds: list[dict] = []
        self.response: requests.Response | None = None
        self.answer: object = None
        self.sent: object = None
        self.cleanups: list = []

    def new_token(self, client: dict) -> str:
        r = requests.post(f"{self.base}/oauth2/token", data={"grant_type": "client_credentials"},
                          auth=(client["client_id"], client["client_secret"]), timeout=30)
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    def owner(self) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True)

    # ------------------------------------------------------------------ requests of our own (set-up)

    def call(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        headers = {"Authorization": f"Bearer {self.token}", "x-correlator": f"setup-{uuid.uuid4().hex[:8]}"}
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = _dumps(body)
        r = requests.request(method, self.base + path, data=data, headers=headers, timeout=30)
        return r.status_code, (json.loads(r.text, parse_float=Decimal) if r.text else None)

    def create_payment(self, phone: str | None = None, **amount_transaction) -> dict:
        body = {"amountTransaction": {**_amount_transaction(phone or self.phone), **amount_transaction}}
        status, answer = self.call("POST", "/carrier-billing/v0.5/payments", body)
        assert status == 201, answer
        self.payments.append(answer)
        return answer

    def prepare_payment(self, phone: str | None = None) -> dict:
        body = {"amountTransaction": _amount_transaction(phone or self.phone,
                                                         gbp=(phone or "").startswith(GB_PREFIX))}
        status, answer = self.call("POST", "/carrier-billing/v0.5/payments/prepare", body)
        assert status == 201, answer
        self.payments.append(answer)
        return answer

    def collected_payment(self) -> dict:
        payment = self.create_payment()
        settle(self.url, payment["paymentId"])
        return payment

    def create_refund(self, payment_id: str, kind: str = "total", amount: str = "50") -> dict:
        body = _refund_body(kind, amount)
        status, answer = self.call("POST", f"/carrier-billing-refund/v0.3/payments/{payment_id}/refunds", body)
        assert status == 201, answer
        self.refunds.append(answer)
        return answer

    # ------------------------------------------------------------------ the request under test

    def operation_of(self, operation_id: str) -> tuple[str, str]:
        for path, item in DOCUMENT.doc["paths"].items():
            for method, op in item.items():
                if isinstance(op, dict) and op.get("operationId") == operation_id:
                    return method.upper(), path
        raise AssertionError(f"no operation {operation_id}")

    def operation(self) -> str:
        """The operation the scenario's resource is for (POST where a path has both)."""
        resource = self.resource
        for suffix, op in (("/validate", "validatePayment"), ("/confirm", "confirmPayment"),
                           ("/cancel", "cancelPayment"), ("/prepare", "preparePayment"),
                           ("/remaining-amount", "retrievePaymentRemainingAmount"),
                           ("/refunds/{refundId}", "retrieveRefund")):
            if resource.endswith(suffix):
                return op
        if "refund" in resource:
            return "createRefund"
        if resource.endswith("{paymentId}"):
            return "retrievePayment"
        return "createPayment"

    def default_body(self) -> object:
        op = self.operation()
        if op in ("createPayment", "preparePayment"):
            return {"amountTransaction": _amount_transaction(self.phone)}
        if op in ("confirmPayment", "cancelPayment"):
            return {"phoneNumber": self.phone}
        if op == "validatePayment":
            return {"authorizationId": self.authorization_id, "code": self.pin}
        if op == "createRefund":
            return _refund_body("total")
        return None

    def body_dict(self) -> dict:
        if self.body is MISSING or self.body is None:
            self.body = self.default_body()
        return self.body

    def valid_payment(self) -> str:
        """A payment the resource's operation can act on."""
        op = self.operation()
        if op == "validatePayment":
            self.phone = _number(GB_PREFIX)
            prepared = self.prepare_payment(self.phone)
            assert prepared["paymentStatus"] == "pending_validation", prepared
            self.authorization_id = prepared["validationInfo"]["authorizationId"]
            self.pin = handset_pin(self.url, self.phone)
            self.payment = prepared
        elif op in ("confirmPayment", "cancelPayment"):
            self.payment = self.prepare_payment()
        elif op in ("createRefund", "retrievePaymentRemainingAmount", "retrieveRefund") or "refund" in self.resource:
            self.payment = self.collected_payment()
        else:
            self.payment = self.create_payment()
        return self.payment["paymentId"]

    def send(self, operation_id: str) -> None:
        method, path = self.operation_of(operation_id)
        for name, value in self.path_params.items():
            path = path.replace("{" + name + "}", value)
        data = self.raw
        if data is None and self.body is not None:
            if self.body is MISSING and method == "POST":
                self.body = self.default_body()
            if self.body is not MISSING and self.body is not None:
                data = _dumps(self.body)
        self.sent = self.body
        self.response = requests.request(method, self.base + path, params=self.query, data=data,
                                         headers=self.headers, timeout=30)
        text = self.response.text
        self.answer = json.loads(text, parse_float=Decimal) if text and "json" in self.response.headers.get(
            "Content-Type", "") else None


def _dumps(body: object) -> bytes:
    """JSON with Decimal amounts written as the numbers they are, never through a float."""
    text = json.dumps(body, default=lambda value: f"@@{value}@@")
    return re.sub(r'"@@([0-9.eE+-]+)@@"', r"\1", text).encode()


def _amount_transaction(phone: str | None, *, gbp: bool = False) -> dict:
    transaction = {"referenceCode": f"ref-{uuid.uuid4().hex[:12]}",
                   "paymentAmount": {"chargingInformation": {
                       "amount": Decimal("3.00") if gbp else Decimal("200"), "currency": "GBP" if gbp else "NGN",
                       "description": "100 gems"}}}
    if phone is not None:
        transaction["phoneNumber"] = phone
    return transaction


def _refund_body(kind: str, amount: str = "50") -> dict:
    transaction: dict = {"referenceCode": f"refund-{uuid.uuid4().hex[:12]}", "refundAmount": {}}
    if kind == "partial":
        transaction["refundAmount"] = {"chargingInformation": {"amount": Decimal(amount), "currency": "NGN",
                                                               "description": "refund"}}
    return {"type": kind, "amountTransaction": transaction}


def _path(expression: str) -> list[str]:
    assert expression.startswith("$."), expression
    return expression[2:].split(".")


def _get(document: object, expression: str) -> object:
    node = document
    for key in _path(expression):
        if not isinstance(node, dict) or key not in node:
            return MISSING
        node = node[key]
    return node


def _set(document: dict, expression: str, value: object) -> None:
    keys = _path(expression)
    node = document
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


def _delete(document: dict, expression: str) -> None:
    keys = _path(expression)
    node = document
    for key in keys[:-1]:
        node = node.get(key, {})
    node.pop(keys[-1], None)


def _when(text: str) -> datetime:
    """The test definitions' dates: NOW, NOW - 7 days, or an RFC 3339 date-time."""
    now = datetime.now(UTC)
    match = re.fullmatch(r"NOW(?:\s*([+-])\s*(\d+)\s*days?)?", text.strip())
    if match:
        days = int(match.group(2) or 0)
        return now - timedelta(days=days) if match.group(1) == "-" else now + timedelta(days=days)
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _stamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def step(pattern: str):
    """A step of any keyword (the test definitions chain Given steps with And after Then, and back)."""
    parser = parsers.re(pattern)

    def decorate(function):
        # stacklevel 2: the step fixtures belong to this module, which called decorate.
        return given(parser, stacklevel=2)(when(parser, stacklevel=2)(then(parser, stacklevel=2)(function)))

    return decorate


@pytest.fixture
def ctx(camara_world):
    scenario = Scenario(camara_world)
    yield scenario
    for undo in reversed(scenario.cleanups):
        undo()


# ---------------------------------------------------------------------------------------------- set-up steps


@step(r'the resource "(?P<resource>[^"]+)"')
def _resource(ctx, resource):
    ctx.resource = resource


@step(r'the header "(?P<name>[^"]+)" is set to "(?P<value>[^"]*)"')
def _header(ctx, name, value):
    ctx.headers[name] = value


@step(r'(?:the )?header "Authorization" is set to a valid access token(?P<rest>.*)')
def _valid_token(ctx, rest):
    if "identifying a phone number" in rest or "associated for a phone number" in rest:
        pytest.skip(THREE_LEGGED)
    ctx.headers["Authorization"] = f"Bearer {ctx.token}"


@step(r'the header "Authorization" is set to an invalid access token')
def _invalid_token(ctx):
    ctx.headers["Authorization"] = "Bearer cpt_" + uuid.uuid4().hex


@step(r'the header "Authorization" is set to an expired access token')
def _expired_token(ctx):
    token = ctx.new_token(ctx.client)
    with ctx.owner() as conn:
        conn.execute("update cp.api_token set expires_at = clock_timestamp() - interval '1 second' "
                     "where token_sha256 = sha256(convert_to(%s, 'UTF8'))", [token])
    ctx.headers["Authorization"] = f"Bearer {token}"


@step(r'the header "Authorization" is removed')
def _no_token(ctx):
    ctx.headers.pop("Authorization", None)


@step(r'(?:the )?header "Authorization" is set to an access token without the required scope')
def _token_without_scope(ctx):
    client = add_client(ctx.url, "acme", ["carrierpay:balance:read"])
    ctx.headers["Authorization"] = f"Bearer {ctx.new_token(client)}"


@step(r'the header "x-correlator" complies with the schema at .*')
def _correlator(ctx):
    ctx.headers["x-correlator"] = f"b9d7c1f0-{uuid.uuid4().hex[:8]}"


@step(r'the header "x-correlator" does not comply with the schema at .*')
def _bad_correlator(ctx):
    ctx.headers["x-correlator"] = "not a correlator: spaces and %"


@step(r'the request body is set by default to a request body compliant with the schema')
def _default_body(ctx):
    ctx.body = MISSING


@step(r'the request body is set to a valid request body')
def _valid_body(ctx):
    body = ctx.body_dict()
    if any("payment_denied" in tag for tag in ctx.tags):
        # The test definitions' "phone number not eligible for payment": a UK number, whose regulation wants
        # the subscriber's consent to each purchase, so a one-step payment is denied and a prepared one cannot
        # be confirmed before its PIN.
        ctx.phone = _number(GB_PREFIX)
        if ctx.operation() == "createPayment":
            body["amountTransaction"] = _amount_transaction(ctx.phone, gbp=True)
        elif ctx.operation() == "confirmPayment":
            ctx.path_params["paymentId"] = ctx.prepare_payment(ctx.phone)["paymentId"]
            body["phoneNumber"] = ctx.phone
    if any("payment_not_eligible_for_refund" in tag for tag in ctx.tags):
        # The test definitions' payment no longer eligible for a refund: one past its carrier's refund window,
        # here a window of no days at all.
        _nigeria_rules(ctx, refund_window_days=0)


@step(r'the request body is not included')
def _no_body(ctx):
    ctx.body = None


@step(r'the request body is set to "(?P<text>[^"]*)"')
def _raw_body(ctx, text):
    ctx.raw = text.encode()


@step(r'the request body property ?"\$\.amountTransaction" is set with valid required information(?: for this '
      r'refund type)?')
def _amount_transaction_step(ctx):
    body = ctx.body_dict()
    if ctx.operation() == "createRefund":
        body["amountTransaction"] = _refund_body(body.get("type", "total"))["amountTransaction"]
    elif any(tag.endswith("with_validation_info") for tag in ctx.tags):
        # A UK number: its regulation wants the subscriber's PIN for a purchase, which validationInfo asks for.
        ctx.phone = _number(GB_PREFIX)
        body["amountTransaction"] = _amount_transaction(ctx.phone, gbp=True)
    else:
        body["amountTransaction"] = _amount_transaction(ctx.phone)


@step(r'the request body property "\$\.type" is set with a valid value')
def _type_valid(ctx):
    ctx.body_dict().setdefault("type", "total")


@step(r'the request body property "\$\.type" is set to "(?P<kind>total|partial)"')
def _type(ctx, kind):
    body = ctx.body_dict()
    body["type"] = kind
    body["amountTransaction"] = _refund_body(kind)["amountTransaction"]


@step(r'the request body property "\$\.sink" is set with a valid (?:HTTPS )?URL')
def _sink(ctx):
    ctx.body_dict()["sink"] = "https://sink.example.com/events"


@step(r'the request body property "\$\.sinkCredential" is set to a valid credential with property '
      r'"\$\.sinkCredential\.credentialType" set to "ACCESSTOKEN"')
def _sink_credential(ctx):
    ctx.body_dict()["sinkCredential"] = {"credentialType": "ACCESSTOKEN", "accessToken": "it-is-a-token",
                                         "accessTokenExpiresUtc": "2099-01-01T00:00:00Z",
                                         "accessTokenType": "bearer"}


@step(r'the request body property "(?P<prop>\$\.amountTransaction\.(?:payment|refund)Amount\.chargingInformation)'
      r'\.isTaxIncluded" is set to (?P<value>true|false OR not set)')
def _tax_included(ctx, prop, value):
    _set(ctx.body_dict(), prop + ".isTaxIncluded", value == "true")
    if value != "true":
        _delete(ctx.body_dict(), prop + ".isTaxIncluded")


@step(r'the request body property "(?P<prop>[^"]+\.taxAmount)" is set to a valid value')
def _tax_amount(ctx, prop):
    _set(ctx.body_dict(), prop, Decimal("10"))


@step(r'the request body property "(?P<prop>[^"]+\.merchantIdentifier)" is set to a valid value')
def _merchant_identifier(ctx, prop):
    _set(ctx.body_dict(), prop, "acme-store-7")


@step(r'the request body array property "\$\.amountTransaction\.paymentAmount\.paymentDetails" is set with valid '
      r'information')
def _payment_details(ctx):
    _set(ctx.body_dict(), "$.amountTransaction.paymentAmount.paymentDetails",
         [{"id": "item-1", "amount": Decimal("150"), "currency": "NGN", "description": "75 gems"},
          {"id": "item-2", "amount": Decimal("50"), "currency": "NGN", "description": "25 gems"}])


@step(r'the request body array property "\$\.amountTransaction\.refundAmount\.refundDetails" is set with valid '
      r'information')
def _refund_details(ctx):
    _set(ctx.body_dict(), "$.amountTransaction.refundAmount.refundDetails",
         [{"paymentItemId": "item-1", "amount": Decimal("50"), "currency": "NGN", "description": "25 gems"}])


@step(r'the request body property "(?P<prop>\$\.(?:amountTransaction\.)?clientCorrelator)" is set to a valid value')
def _client_correlator(ctx, prop):
    _set(ctx.body_dict(), prop, f"cc-{uuid.uuid4().hex[:12]}")


@step(r'the request body property "\$\.reason" is set to a valid value')
def _reason(ctx):
    ctx.body_dict()["reason"] = "the customer was charged twice by mistake"


@step(r'the request body property "\$\.(?:amountTransaction\.)?phone[nN]umber" is set to a valid value which is the '
      r'same as associated to access token')
def _three_legged_phone(ctx):
    pytest.skip(THREE_LEGGED)


@step(r'the request body property "(?P<prop>\$\.(?:amountTransaction\.)?phoneNumber)" is set to a valid '
      r'(?:value|phone number)')
def _phone(ctx, prop):
    _set(ctx.body_dict(), prop, ctx.phone)


@step(r'the request body property "(?P<prop>\$\.(?:amountTransaction\.)?phoneNumber)" does not comply with the OAS '
      r'schema at .*')
def _bad_phone(ctx, prop):
    _set(ctx.body_dict(), _phone_path(ctx, prop), "0034-not-a-number")


@step(r'the request body property "(?P<prop>\$\.(?:amountTransaction\.)?phoneNumber)" is compliant with the schema '
      r'but does not identify a valid phone number')
def _unknown_phone(ctx, prop):
    _set(ctx.body_dict(), _phone_path(ctx, prop), NOT_SERVED)


@step(r'the request body property "(?P<prop>\$\.(?:amountTransaction\.)?phoneNumber)" (?:is missing|is not included)')
def _phone_missing(ctx, prop):
    _delete(ctx.body_dict(), _phone_path(ctx, prop))


def _phone_path(ctx, prop: str) -> str:
    """The test definitions name `$.phoneNumber` for createPayment too, where it is in the amountTransaction."""
    if ctx.operation() in ("createPayment", "preparePayment"):
        return "$.amountTransaction.phoneNumber"
    return "$.phoneNumber"


@step(r'the request body property "(?P<prop>[^"]+)" is not included')
def _not_included(ctx, prop):
    _delete(ctx.body_dict(), prop)


@step(r'the request body property "(?P<prop>[^"]+)" does not comply with the OAS schema at .*')
def _not_compliant(ctx, prop):
    _set(ctx.body_dict(), prop, 12345)


@step(r'the request body property includes property "\$\.sink" which is not set to an url')
def _sink_not_url(ctx):
    ctx.body_dict()["sink"] = "not an url"


@step(r'the request body property includes property "\$\.sink" with an HTTP endpoint')
def _sink_http(ctx):
    ctx.body_dict()["sink"] = "http://sink.example.com/events"


@step(r'the request body property includes property "\$\.sinkCredential\.credentialType" whose value is not '
      r'"ACCESSTOKEN"')
def _credential_type(ctx):
    _sink(ctx)
    _sink_credential(ctx)
    ctx.body_dict()["sinkCredential"]["credentialType"] = "PLAIN"


@step(r'the request body property includes property "\$\.sinkCredential\.accessTokenType" whose value is not '
      r'"bearer"')
def _access_token_type(ctx):
    _sink(ctx)
    _sink_credential(ctx)
    ctx.body_dict()["sinkCredential"]["accessTokenType"] = "mac"


@step(r'the request body property includes property "(?P<prop>\$\.(?:amountTransaction\.)?clientCorrelator)" with a '
      r'value already use in a non-completed (?P<what>payment|refund)')
def _correlator_in_use(ctx, prop, what):
    correlator = f"cc-{uuid.uuid4().hex[:12]}"
    if what == "payment":
        ctx.create_payment(clientCorrelator=correlator)
        body = ctx.body_dict()
        body["amountTransaction"]["clientCorrelator"] = correlator
        body["amountTransaction"]["paymentAmount"]["chargingInformation"]["description"] = "another purchase"
    else:
        first = _refund_body("partial", "20")
        first["amountTransaction"]["clientCorrelator"] = correlator
        status, answer = ctx.call("POST", f"/carrier-billing-refund/v0.3/payments/{ctx.path_params['paymentId']}"
                                          "/refunds", first)
        assert status == 201, answer
        body = ctx.body_dict()
        body.clear()
        body.update(_refund_body("partial", "30"))
        body["amountTransaction"]["clientCorrelator"] = correlator


@step(r'the request body property "\$\.amountTransaction\.referenceCode" is set to a value already use in another '
      r'(?P<what>payment|refund) request')
def _reference_in_use(ctx, what):
    if what == "payment":
        used = ctx.create_payment()["amountTransaction"]["referenceCode"]
    else:
        used = ctx.create_refund(ctx.path_params["paymentId"], "partial", "10")["amountTransaction"]["referenceCode"]
    ctx.body_dict()["amountTransaction"]["referenceCode"] = used


@step(r'the request body property "(?P<prop>\$\.(?:amountTransaction\.)?clientCorrelator)" is missing')
def _correlator_missing(ctx, prop):
    _delete(ctx.body_dict(), "$.amountTransaction.clientCorrelator")
    _delete(ctx.body_dict(), "$.clientCorrelator")


@step(r'the request body property "\$\.amountTransaction\.paymentAmount\.chargingInformationAmount" exceeds the value '
      r'allowed by the regulation')
def _amount_too_high(ctx):
    # Nigeria's regulation given a per-transaction cap below the price for the scenario's length.
    _nigeria_rules(ctx, cap_currency="NGN", max_transaction_minor=10000)
    ctx.body_dict()


def _nigeria_rules(ctx, **rules) -> None:
    """Nigeria's regulation with these rules added, until the scenario ends."""
    with ctx.owner() as conn:
        name, source, before = conn.execute(
            "select name, source, rules from cp.regulation where code = 'NG'").fetchone()
        conn.execute("select admin.upsert_regulation('NG', %s, %s, %s)",
                     [name, source, psycopg.types.json.Jsonb({**before, **rules})])

    def restore():
        with ctx.owner() as conn:
            conn.execute("select admin.upsert_regulation('NG', %s, %s, %s)",
                         [name, source, psycopg.types.json.Jsonb(before)])

    ctx.cleanups.append(restore)


@step(r'the request body property "\$\.amountTransaction\.refundAmount\.chargingInformation\.amount" exceeds the value '
      r'of the related payment OR exceeds the value allowed by the regulation')
def _refund_too_high(ctx):
    ctx.body.clear()
    ctx.body.update(_refund_body("partial", "200.01"))


@step(r'the request body property "\$\.authorizationId" is set to a valid value')
def _authorization(ctx):
    ctx.body_dict()["authorizationId"] = ctx.authorization_id


@step(r'the request body property "\$\.code" is set to a valid value')
def _pin(ctx):
    ctx.body_dict()["code"] = ctx.pin


@step(r'the request body property includes property "\$\.authorizationId" with a non-existing value in the '
      r'environment')
def _bad_authorization(ctx):
    ctx.body_dict()["authorizationId"] = "auth-" + uuid.uuid4().hex


@step(r'the request body property includes property "\$\.code" with a non-existing value in the environment')
def _bad_pin(ctx):
    body = ctx.body_dict()
    body["code"] = str((int(ctx.pin) + 1) % 10 ** len(ctx.pin)).zfill(len(ctx.pin))


@step(r'the path parameter "paymentId" is set to a valid (?:value(?: in the environment)?|refund-eligible payment '
      r'value)')
def _payment_id(ctx):
    ctx.path_params["paymentId"] = ctx.valid_payment()


@step(r'the path parameter "paymentId" is set to the value (?:for that payment|of the payment related to this '
      r'refund)')
def _that_payment(ctx):
    ctx.path_params["paymentId"] = ctx.payment["paymentId"]


@step(r'the path parameter "(?P<name>paymentId|refundId)" is compliant with the schema but does not identify a '
      r'valid (?:payment|refund) in the environment')
def _unknown_id(ctx, name):
    ctx.path_params[name] = str(random.randint(10 ** 12, 10 ** 13))


@step(r'the path parameter "paymentId" is set to a valid value of a payment whose "paymentStatus" != "succeeded"')
def _processing_payment(ctx):
    ctx.payment = ctx.create_payment()
    ctx.path_params["paymentId"] = ctx.payment["paymentId"]


@step(r'the path param "paymentId" is set to a valid value of an already (?P<state>confirmed|cancelled) payment')
def _finished_payment(ctx, state):
    payment = ctx.prepare_payment()
    status, answer = ctx.call("POST", f"/carrier-billing/v0.5/payments/{payment['paymentId']}/"
                              f"{'confirm' if state == 'confirmed' else 'cancel'}", {"phoneNumber": ctx.phone})
    assert status == 202, answer
    ctx.path_params["paymentId"] = payment["paymentId"]


@step(r'the path parameter "refundId" is set to a valid value(?: in the environment)?')
def _refund_id(ctx):
    if ctx.refund is None:
        payment_id = ctx.path_params.get("paymentId") or ctx.valid_payment()
        ctx.path_params["paymentId"] = payment_id
        ctx.refund = ctx.create_refund(payment_id)
    ctx.path_params["refundId"] = ctx.refund["refundId"]


@step(r'the path parameter "refundId" is set to the value for this refund')
def _this_refund(ctx):
    ctx.path_params["refundId"] = ctx.refund["refundId"]


@step(r'the query parameter "(?P<name>[^"]+)" is set to "(?P<value>[^"]*)"')
def _query(ctx, name, value):
    if name.endswith("CreationDate.gte") or name.endswith("CreationDate.lte"):
        value = _when(value).isoformat()
    ctx.query[name] = value


@step(r'the query parameter "merchantIdentifier" is set to the value representing such a merchant')
def _merchant_query(ctx):
    ctx.query["merchantIdentifier"] = "acme-store-7"


@step(r'(?:an|at least an) existing payment created by operation createPayment OR preparePayment')
def _existing_payment(ctx):
    ctx.payment = ctx.collected_payment() if "refund" in ctx.resource else ctx.create_payment()


@step(r'several existing payments created by operation createPayment OR preparePayment(?P<how>.*)')
def _several_payments(ctx, how):
    if "for a given merchant" in how:
        for _ in range(3):
            ctx.create_payment(paymentAmount={"chargingInformation": {
                "amount": Decimal("200"), "currency": "NGN", "description": "100 gems"},
                "chargingMetaData": {"merchantIdentifier": "acme-store-7"}})
        ctx.create_payment()
        return
    for _ in range(6):
        ctx.create_payment()
    if "different payment status" in how:
        settle(ctx.url, ctx.payments[0]["paymentId"])
        settle(ctx.url, ctx.payments[1]["paymentId"], "failed")
        prepared = ctx.prepare_payment()
        ctx.call("POST", f"/carrier-billing/v0.5/payments/{prepared['paymentId']}/cancel", {"phoneNumber": ctx.phone})
        ctx.prepare_payment()
        ctx.prepare_payment(_number(GB_PREFIX))


@step(r'no (?:payments|refunds) have been created by operation .*')
def _nothing_created(ctx):
    if "refund" in ctx.resource:
        ctx.payment = ctx.collected_payment()
        ctx.path_params["paymentId"] = ctx.payment["paymentId"]


@step(r'(?:an|at least an) existing refund created by operation createRefund')
def _existing_refund(ctx):
    ctx.payment = ctx.collected_payment()
    ctx.path_params["paymentId"] = ctx.payment["paymentId"]
    ctx.refund = ctx.create_refund(ctx.payment["paymentId"], "partial", "50")


@step(r'several existing refunds created by operation createRefund(?P<how>.*)')
def _several_refunds(ctx, how):
    ctx.payment = ctx.collected_payment()
    pid = ctx.payment["paymentId"]
    ctx.path_params["paymentId"] = pid
    if "for a given merchant" in how:
        for _ in range(2):
            body = _refund_body("partial", "20")
            body["amountTransaction"]["refundAmount"]["chargingMetaData"] = {"merchantIdentifier": "acme-store-7"}
            status, answer = ctx.call("POST", f"/carrier-billing-refund/v0.3/payments/{pid}/refunds", body)
            assert status == 201, answer
            ctx.refunds.append(answer)
        ctx.create_refund(pid, "partial", "20")
        return
    for _ in range(6):
        ctx.create_refund(pid, "partial", "10")
    if "different refund status" in how:
        settle(ctx.url, ctx.refunds[0]["refundId"])
        settle(ctx.url, ctx.refunds[1]["refundId"], "failed")


@step(r'an existing (?P<kind>total|partial) refund (?P<state>being perfomed|completed successfully|finally denied) '
      r'for that "paymentId"')
def _refund_in_state(ctx, kind, state):
    if ctx.payment is None or ctx.payment.get("paymentStatus") != "succeeded":
        ctx.payment = ctx.collected_payment()
    ctx.refund = ctx.create_refund(ctx.payment["paymentId"], kind, "50")
    if state != "being perfomed":
        settle(ctx.url, ctx.refund["refundId"], "succeeded" if state == "completed successfully" else "failed")


@step(r'that the environment is configured with a threshold policy of N transactions per second')
def _threshold(ctx):
    with ctx.owner() as conn:
        conn.execute("select admin.set_api_client_rate_limit(%s, 1)", [ctx.client["client_id"]])


@step(r'the threshold of requests has been reached')
def _threshold_reached(ctx):
    _threshold(ctx)
    # The limiter's clock stands still until the scenario ends, so no request is let through by time passing.
    limiter = ctx.server.limiter
    clock, now = limiter.clock, limiter.clock()
    limiter.clock = lambda: now

    def restore():
        limiter.clock = clock

    ctx.cleanups.append(restore)
    for _ in range(10):
        if ctx.call("GET", "/carrier-billing/v0.5/payments")[0] == 429:
            break
    else:
        raise AssertionError("the request limit was never reached")


@step(r'that the service is not available for all phone numbers commercialized by the operator')
def _partial_service(ctx):
    pass


@step(r'a valid phone number, identified by the token or provided in the request body, for which the service is not '
      r'applicable')
def _not_applicable_phone(ctx):
    # The number's carrier is switched off for charging: the number is the operator's, the service is not offered
    # for it (after the payment to confirm or cancel was prepared).
    def enable():
        with ctx.owner() as conn:
            conn.execute("select admin.set_carrier_enabled('test_ng', true)")

    with ctx.owner() as conn:
        conn.execute("select admin.set_carrier_enabled('test_ng', false)")
    ctx.cleanups.append(enable)
    ctx.body_dict()


# ---------------------------------------------------------------------------------------------- the request


@step(r'the request "(?P<operation_id>\w+)" is sent')
def _send(ctx, operation_id):
    ctx.send(operation_id)


@step(r'the request "(?P<operation_id>\w+)" is sent after "(?P<times>\d+)" times')
def _send_again(ctx, operation_id, times):
    for _ in range(int(times)):
        ctx.send(operation_id)


# ---------------------------------------------------------------------------------------------- the answer


@step(r'the response status code is (?P<status>\d+)')
def _status(ctx, status):
    assert ctx.response.status_code == int(status), (ctx.response.status_code, ctx.response.text[:500])


@step(r'the response header "Content-Type" is "application/json"')
def _content_type(ctx):
    assert ctx.response.headers["Content-Type"].startswith("application/json"), ctx.response.headers


@step(r'the response header "x-correlator" has same value as the request header "x-correlator"')
def _echo(ctx):
    assert ctx.response.headers.get("x-correlator") == ctx.headers["x-correlator"]


@step(r'the response body complies with the OAS schema at "(?P<schema>[^"]+)"')
def _complies(ctx, schema):
    errors = [e.message for e in DOCUMENT.validator("#" + schema).iter_errors(ctx.answer)]
    assert not errors, errors


@step(r'the response property "\$\.status" is (?P<status>\d+)')
def _body_status(ctx, status):
    assert ctx.answer["status"] == int(status), ctx.answer


@step(r'the response property "\$\.code" is "(?P<code>[^"]+)"')
def _code(ctx, code):
    assert ctx.answer["code"] == code, ctx.answer


@step(r'the response property "\$\.message" contains a user friendly text')
def _message(ctx):
    assert isinstance(ctx.answer["message"], str) and len(ctx.answer["message"].strip()) > 3, ctx.answer


@step(r'the response body property "(?P<prop>[^"]+)" is "(?P<value>[^"]*)"')
def _property_is(ctx, prop, value):
    actual = _get(ctx.answer, prop)
    assert (json.loads(value) if value.startswith("{") else value) == actual, (prop, actual)


@step(r'the response body property "\$\.type" is set "(?P<value>[^"]*)"')
def _type_is(ctx, value):
    assert ctx.answer["type"] == value


@step(r'the response body property "(?P<prop>[^"]+)" is true')
def _property_true(ctx, prop):
    assert _get(ctx.answer, prop) is True, ctx.answer


@step(r'the response body property "(?P<prop>[^"]+)" is false OR not returned')
def _property_false(ctx, prop):
    assert _get(ctx.answer, prop) in (False, MISSING), ctx.answer


@step(r'the response body (?:array )?property "(?P<prop>[^"]+)" has the same (?:value|information) as provided in '
      r'the request body')
def _same_as_sent(ctx, prop):
    sent = _get(ctx.sent, prop)
    assert sent is not MISSING, (prop, ctx.sent)
    assert _get(ctx.answer, prop) == sent, (prop, _get(ctx.answer, prop), sent)


@step(r'the response property "\$\.(?P<name>validatioInfo)" is (?P<returned>returned|not returned)')
def _validation_info(ctx, name, returned):
    # The test definition misspells validationInfo, the property carrier-billing.yaml defines.
    assert ("validationInfo" in ctx.answer) == (returned == "returned"), ctx.answer


@step(r'the response body is an empty array "\[\]"')
def _empty(ctx):
    assert ctx.answer == []


@step(r'the response property "\$\.amount" is "0"')
def _nothing_remains(ctx):
    assert ctx.answer["amount"] == 0, ctx.answer


@step(r'the response property "\$\.amount" is the value of the amount of the related payment')
def _all_remains(ctx):
    assert ctx.answer["amount"] == ctx.payment["amountTransaction"]["paymentAmount"]["chargingInformation"]["amount"]


@step(r'the response property "\$\.amount" is the value of "payment amount" - "refund amount"')
def _rest_remains(ctx):
    paid = ctx.payment["amountTransaction"]["paymentAmount"]["chargingInformation"]["amount"]
    refunded = ctx.refund["amountTransaction"]["refundAmount"]["chargingInformation"]["amount"]
    assert ctx.answer["amount"] == paid - refunded, ctx.answer


def _items(ctx) -> list[dict]:
    assert isinstance(ctx.answer, list), ctx.answer
    return ctx.answer


def _noun(ctx) -> str:
    return "refund" if "refund" in ctx.resource else "payment"


@step(r'only five (?:payments|refunds) (?:are )?returned')
def _five(ctx):
    assert len(_items(ctx)) == 5


@step(r'only the (?:payments|refunds) associated to that application are returned')
def _application(ctx):
    ids = {item[f"{_noun(ctx)}Id"] for item in _items(ctx)}
    ours = {p[f"{_noun(ctx)}Id"] for p in (ctx.refunds if _noun(ctx) == "refund" else ctx.payments)}
    assert ours <= ids or ids <= ours, (ids, ours)
    assert ids


@step(r'(?:all|only) the (?:payments|refunds)(?: returned)? (?:have|with) their property '
      r'"\$(?:\[\*\])?\.(?P<field>\w+)" == "(?P<value>[^"]+)"(?: are returned)?')
def _status_filter(ctx, field, value):
    items = _items(ctx)
    assert items and all(item[field] == value for item in items), items


@step(r'(?:all|only) the (?:payments|refunds)(?: returned)? (?:have|with) their property '
      r'"\$(?:\[\*\])?\.(?P<field>\w+CreationDate)" (?P<how>greater|lower) or equal than "(?P<at>[^"]+)"'
      r'(?: are returned)?')
def _date_filter(ctx, field, how, at):
    bound = _stamp(ctx.query[f"{field}.{'gte' if how == 'greater' else 'lte'}"])
    for item in _items(ctx):
        stamp = _stamp(item[field])
        assert stamp >= bound if how == "greater" else stamp <= bound, (stamp, bound)


@step(r'(?:all|only) the (?:payments|refunds)(?: returned)? (?:have|with) their property '
      r'"\$(?:\[\*\])?\.(?P<field>\w+CreationDate)" between "(?P<start>[^"]+)" and "(?P<end>[^"]+)"')
def _date_range(ctx, field, start, end):
    low, high = _stamp(ctx.query[f"{field}.gte"]), _stamp(ctx.query[f"{field}.lte"])
    for item in _items(ctx):
        assert low <= _stamp(item[field]) <= high


@step(r'all the (?:payments|refunds) returned are ordered by "(?P<order>asc|desc)" property '
      r'"\$(?:\[\*\])?\.(?P<field>\w+)"')
def _ordered(ctx, order, field):
    stamps = [_stamp(item[field]) for item in _items(ctx)]
    assert len(stamps) > 1 and stamps == sorted(stamps, reverse=order == "desc"), stamps


@step(r'(?:all|only) the (?:payments|refunds)(?: returned)? (?:have|with) their property '
      r'"\$(?:\[\*\])?\.amountTransaction\.(?P<amount>paymentAmount|refundAmount)\.chargingMetadata\.'
      r'merchantIdentifier" set to the same value as the query parameter "merchantIdentifier"(?: are returned)?')
def _merchant_filter(ctx, amount):
    items = _items(ctx)
    assert items and all(item["amountTransaction"][amount]["chargingMetaData"]["merchantIdentifier"]
                         == ctx.query["merchantIdentifier"] for item in items), items
