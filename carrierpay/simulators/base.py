"""What every carrier simulator shares: a settable clock, subscribers whose balances follow top-up
habits, the simulator's own ledger (the ground truth tests compare against), fault knobs, and an
aiohttp server bound to an ephemeral port on 127.0.0.1.

The money logic is deliberately independent of carrierpay's connector code: a simulator that
reused the connector's helpers would agree with the connector's bugs.
"""

from __future__ import annotations

import asyncio
import json
import random
import ssl
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ExactNumber(Decimal):
    """An amount a simulator writes as a JSON number, digit for digit (as CAMARA's schema has amounts)."""


def exact_json(document: Any) -> str:
    """json.dumps with ExactNumber written as a number: exact, unlike a float."""
    if isinstance(document, ExactNumber):
        return format(document, "f")
    if isinstance(document, dict):
        return "{" + ", ".join(f"{json.dumps(str(key))}: {exact_json(value)}" for key, value in document.items()) + "}"
    if isinstance(document, list):
        return "[" + ", ".join(exact_json(value) for value in document) + "]"
    return json.dumps(document)


def refusal_code(fault: str | None) -> str | None:
    """The neutral result of a fault that refuses a request before anything is applied, else None."""
    return {"throttle": "throttled", "transient": "transient", "deny": "consent_refused"}.get(fault or "")


class SimClock:
    """Simulated wall-clock time; it only moves when a test moves it."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2025, 1, 6, 9, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, moment: datetime) -> None:
        if moment.tzinfo is None:
            raise ValueError("the simulated clock needs an aware datetime")
        self._now = moment.astimezone(UTC)

    def advance(self, delta: timedelta | None = None, **parts: float) -> datetime:
        self._now += delta or timedelta(**parts)
        return self._now


@dataclass
class Subscriber:
    msisdn: str
    balance_minor: int
    topup_hour: int | None = None  # local hour at which this person habitually tops up
    topup_minor: int = 0
    state: str = "active"  # active | barred | unknown
    topped_up_until: datetime | None = None


@dataclass
class Transaction:
    txid: str
    correlator: str
    msisdn: str
    kind: str  # charge | refund | reserve | capture | release
    amount_minor: int
    currency: str
    at: datetime
    status: str  # succeeded | failed
    code: str = ""  # the simulator's neutral result: ok, insufficient_funds, unknown_subscriber ...
    original_txid: str | None = None
    description: str = ""


class Ledger:
    """Everything the simulated carrier did to subscribers' money, in order."""

    def __init__(self) -> None:
        self.transactions: list[Transaction] = []

    def add(self, transaction: Transaction) -> Transaction:
        self.transactions.append(transaction)
        return transaction

    def _succeeded(self, kind: str, msisdn: str | None) -> list[Transaction]:
        return [
            t
            for t in self.transactions
            if t.kind == kind and t.status == "succeeded" and (msisdn is None or t.msisdn == msisdn)
        ]

    def charges(self, msisdn: str | None = None, correlator: str | None = None) -> list[Transaction]:
        found = self._succeeded("charge", msisdn) + self._succeeded("capture", msisdn)
        return [t for t in found if correlator is None or t.correlator == correlator]

    def refunds(self, msisdn: str | None = None) -> list[Transaction]:
        return self._succeeded("refund", msisdn)

    def charged_total(self, msisdn: str | None = None) -> int:
        return sum(t.amount_minor for t in self.charges(msisdn))

    def refunded_total(self, msisdn: str | None = None) -> int:
        return sum(t.amount_minor for t in self.refunds(msisdn))

    def by_correlator(self, correlator: str) -> list[Transaction]:
        return [t for t in self.transactions if t.correlator == correlator]


@dataclass
class TextMessage:
    """An SMS the simulated network delivered to a subscriber's handset."""

    message_id: str
    msisdn: str
    text: str
    sender: str
    at: datetime
    reference: str = ""


@dataclass
class Result:
    """The neutral answer of the billing core, which each dialect turns into its own wire format."""

    code: str  # ok | insufficient_funds | unknown_subscriber | barred | limit_exceeded | not_found | invalid
    transaction: Transaction | None = None
    repeated: bool = False

    @property
    def ok(self) -> bool:
        return self.code == "ok"


class Billing:
    """Subscribers, balances and the ledger; idempotent per (operation kind, correlator) unless
    `deduplicates` is off: then a repeated request is applied again, as by a carrier that ignores
    our correlator (the status lookup then reports the latest)."""

    def __init__(self, *, clock: SimClock, rng: random.Random, currency: str, timezone: str, txid_prefix: str):
        self.clock = clock
        self.rng = rng
        self.currency = currency
        self.zone = ZoneInfo(timezone)
        self.txid_prefix = txid_prefix
        self.subscribers: dict[str, Subscriber] = {}
        self.ledger = Ledger()
        self.max_charge_minor: int | None = None
        self.deduplicates = True
        self.unknown_prefixes: list[str] = []
        self._by_key: dict[tuple[str, str], Result] = {}
        self._reserved: dict[str, int] = {}
        self._sequence = 0
        # How long the carrier holds a reservation nobody confirms or cancels (simulated time); then it
        # lapses and the money is the subscriber's again. None: held until confirmed or cancelled.
        self.reservation_ttl: timedelta | None = timedelta(minutes=15)

    def add_subscriber(
        self,
        msisdn: str,
        balance_minor: int = 0,
        *,
        topup_hour: int | None = None,
        topup_minor: int = 0,
        state: str = "active",
    ) -> Subscriber:
        subscriber = Subscriber(msisdn, balance_minor, topup_hour, topup_minor, state, self.clock.now())
        self.subscribers[msisdn] = subscriber
        return subscriber

    def subscriber(self, msisdn: str) -> Subscriber | None:
        subscriber = self.subscribers.get(msisdn)
        if subscriber is None:
            if any(msisdn.startswith(prefix) for prefix in self.unknown_prefixes):
                return None
            # Someone we were not told about: a seeded, plausible prepaid customer.
            subscriber = self.add_subscriber(
                msisdn,
                self.rng.randrange(0, 2000),
                topup_hour=self.rng.choice([7, 8, 12, 13, 18, 19, 20]),
                topup_minor=self.rng.choice([500, 1000, 2000]),
            )
        if subscriber.state == "unknown":
            return None
        self._apply_topups(subscriber)
        return subscriber

    def _apply_topups(self, subscriber: Subscriber) -> None:
        """Credit every habitual top-up whose local hour passed since we last looked."""
        now = self.clock.now()
        since = subscriber.topped_up_until or now
        subscriber.topped_up_until = now
        if subscriber.topup_hour is None or not subscriber.topup_minor or now <= since:
            return
        day = since.astimezone(self.zone).date()
        while True:
            moment = datetime(day.year, day.month, day.day, subscriber.topup_hour, tzinfo=self.zone)
            if moment > now:
                break
            if moment > since:
                subscriber.balance_minor += subscriber.topup_minor
            day += timedelta(days=1)

    def balance(self, msisdn: str) -> int | None:
        subscriber = self.subscriber(msisdn)
        self._lapse_reservations()
        return None if subscriber is None else subscriber.balance_minor - self._reserved.get(msisdn, 0)

    def held(self, msisdn: str) -> int:
        """What open reservations hold of a subscriber's balance now."""
        self._lapse_reservations()
        return self._reserved.get(msisdn, 0)

    def _lapse_reservations(self) -> None:
        if self.reservation_ttl is None:
            return
        for reservation in self.ledger.transactions:
            if reservation.kind == "reserve" and reservation.status == "succeeded" \
                    and reservation.at + self.reservation_ttl <= self.clock.now():
                reservation.status = "expired"
                self._reserved[reservation.msisdn] -= reservation.amount_minor

    def release(self, correlator: str, reservation_txid: str) -> Result:
        """Cancel a reservation: the held amount is the subscriber's again. Only an open one can be."""
        earlier = self.previous("release", correlator)
        if earlier:
            return earlier
        self._lapse_reservations()
        reservation = self._find(reservation_txid, "reserve")
        if reservation is None or reservation.status != "succeeded":
            return self._record("release", correlator, reservation.msisdn if reservation else "", 0, "not_found",
                                original_txid=reservation_txid)
        reservation.status = "released"
        self._reserved[reservation.msisdn] -= reservation.amount_minor
        return self._record("release", correlator, reservation.msisdn, reservation.amount_minor, "ok",
                            original_txid=reservation_txid)

    def next_txid(self) -> str:
        self._sequence += 1
        return f"{self.txid_prefix}{self._sequence:08d}"

    def previous(self, kind: str, correlator: str) -> Result | None:
        earlier = self._by_key.get((kind, correlator))
        if earlier is None or not self.deduplicates:
            return None
        return Result(earlier.code, earlier.transaction, repeated=True)

    def _record(self, kind: str, correlator: str, msisdn: str, amount: int, code: str, **extra: Any) -> Result:
        transaction = self.ledger.add(
            Transaction(
                txid=self.next_txid(),
                correlator=correlator,
                msisdn=msisdn,
                kind=kind,
                amount_minor=amount,
                currency=self.currency,
                at=self.clock.now(),
                status="succeeded" if code == "ok" else "failed",
                code=code,
                **extra,
            )
        )
        result = Result(code, transaction)
        self._by_key[(kind, correlator)] = result
        return result

    def charge(self, correlator: str, msisdn: str, amount_minor: int, description: str = "") -> Result:
        earlier = self.previous("charge", correlator)
        if earlier:
            return earlier
        code = self._refusal(msisdn, amount_minor) or "ok"
        if code == "ok":
            self.subscribers[msisdn].balance_minor -= amount_minor
        return self._record("charge", correlator, msisdn, amount_minor, code, description=description)

    def _refusal(self, msisdn: str, amount_minor: int) -> str | None:
        """Why the carrier would not take this amount from this number now (None: it would)."""
        subscriber = self.subscriber(msisdn)
        if subscriber is None:
            return "unknown_subscriber"
        if subscriber.state == "barred":
            return "barred"
        if self.max_charge_minor is not None and amount_minor > self.max_charge_minor:
            return "limit_exceeded"
        if self.balance(msisdn) < amount_minor:
            return "insufficient_funds"
        return None

    def reserve(self, correlator: str, msisdn: str, amount_minor: int) -> Result:
        earlier = self.previous("reserve", correlator)
        if earlier:
            return earlier
        # A reservation is refused for the same reasons as a charge, the per-transaction limit included.
        code = self._refusal(msisdn, amount_minor) or "ok"
        if code == "ok":
            self._reserved[msisdn] = self._reserved.get(msisdn, 0) + amount_minor
        return self._record("reserve", correlator, msisdn, amount_minor, code)

    def capture(self, correlator: str, reservation_txid: str, amount_minor: int) -> Result:
        earlier = self.previous("capture", correlator)
        if earlier:
            return earlier
        self._lapse_reservations()
        reservation = self._find(reservation_txid, "reserve")
        if reservation is None or reservation.status != "succeeded" or amount_minor > reservation.amount_minor:
            return self._record(
                "capture", correlator, reservation.msisdn if reservation else "", amount_minor, "not_found"
            )
        subscriber = self.subscribers[reservation.msisdn]
        self._reserved[reservation.msisdn] -= reservation.amount_minor
        subscriber.balance_minor -= amount_minor
        reservation.status = "captured"
        return self._record(
            "capture", correlator, reservation.msisdn, amount_minor, "ok", original_txid=reservation_txid
        )

    def refund(self, correlator: str, msisdn: str, amount_minor: int, original_txid: str | None = None) -> Result:
        earlier = self.previous("refund", correlator)
        if earlier:
            return earlier
        if original_txid is not None:
            original = self._find(original_txid, "charge") or self._find(original_txid, "capture")
            if original is None or original.status != "succeeded" or original.msisdn != msisdn:
                return self._record(
                    "refund", correlator, msisdn, amount_minor, "not_found", original_txid=original_txid
                )
            refunded = sum(t.amount_minor for t in self.ledger.refunds(msisdn) if t.original_txid == original_txid)
            available = original.amount_minor - refunded
        else:
            available = self.ledger.charged_total(msisdn) - self.ledger.refunded_total(msisdn)
        if amount_minor > available:
            return self._record(
                "refund", correlator, msisdn, amount_minor, "limit_exceeded", original_txid=original_txid
            )
        self.subscribers[msisdn].balance_minor += amount_minor
        return self._record("refund", correlator, msisdn, amount_minor, "ok", original_txid=original_txid)

    def _find(self, txid: str, kind: str) -> Transaction | None:
        for transaction in self.ledger.transactions:
            if transaction.txid == txid and transaction.kind == kind:
                return transaction
        return None

    def lookup(self, correlator: str, kind: str = "charge") -> Result | None:
        return self._by_key.get((kind, correlator))


FAULTS = (
    "throttle",  # refuse as over the TPS budget, nothing applied
    "transient",  # a temporary server error, nothing applied
    "deny",  # a definite policy refusal (consent or validation failed), nothing applied
    "timeout_after_charge",  # apply, then answer later than any sane client waits
    "drop_after_charge",  # apply, then close the connection without answering
    "garbage",  # 200 with a body that is not the promised format
    "html_error",  # an HTML error page from a proxy in front of the carrier
    "wrong_content_type",  # a correct-looking body with a content type we must not trust
)


@dataclass
class Faults:
    """Fault knobs. Rates draw from the simulator's seeded random; injected faults fire exactly once each."""

    latency_s: float = 0.0
    latency_jitter_s: float = 0.0
    transient_rate: float = 0.0
    throttle_rate: float = 0.0
    tps_limit: int | None = None  # requests accepted per window, then throttled
    tps_window_s: float = 1.0
    late_response_s: float = 5.0  # how late a `timeout_after_charge` answer comes, if anyone still listens
    injected: dict[str | None, list[str]] = field(default_factory=lambda: defaultdict(list))
    holds: dict[str | None, asyncio.Event] = field(default_factory=dict)  # answers held until released

    def hold(self, operation: str | None = None) -> None:
        """Stall the carrier: requests of `operation` (None: of every money operation) are applied as
        usual, but their answers wait until `release`; a client that stops waiting gets none."""
        self.holds.setdefault(operation, asyncio.Event())

    def release(self, operation: str | None = None) -> None:
        """Send the answers held by `hold(operation)`, and stop holding them."""
        gate = self.holds.pop(operation, None)
        if gate is not None:
            gate.set()

    def inject(self, fault: str, *, operation: str | None = None, times: int = 1) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")
        self.injected[operation].extend([fault] * times)

    def take(self, operation: str) -> str | None:
        for key in (operation, None):
            if self.injected.get(key):
                return self.injected[key].pop(0)
        return None


class Simulator:
    """Base of the four dialects: lifecycle, request log, latency, throttling and fault plumbing."""

    dialect = "base"
    txid_prefix = "TX"
    currency = ""  # the dialect's home currency and timezone; an instance may be given others
    timezone = ""

    def __init__(
        self,
        *,
        seed: int = 0,
        currency: str | None = None,
        timezone: str | None = None,
        exponent: int = 2,
        clock: SimClock | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.ssl_context = ssl_context  # serve HTTPS (and require client certificates if it says so)
        self.clock = clock or SimClock()
        self.currency = self.currency if currency is None else currency
        self.exponent = exponent
        self.timezone = self.timezone if timezone is None else timezone
        self.billing = Billing(
            clock=self.clock, rng=self.rng, currency=self.currency, timezone=self.timezone, txid_prefix=self.txid_prefix
        )
        self.faults = Faults()
        self.received: list[dict[str, Any]] = []  # every request as it arrived, for tests to inspect
        self.record_requests = True  # off for long runs (the demo), where `received` would only grow
        self.texts: list[TextMessage] = []  # every SMS delivered to a handset, in order
        self._texts_by_reference: dict[str, TextMessage] = {}
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self._window: tuple[int, int] = (0, 0)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._site: web.TCPSite | None = None
        self.url = ""

    # -------------------------------------------------------------- conveniences for tests

    @property
    def ledger(self) -> Ledger:
        return self.billing.ledger

    def add_subscriber(self, msisdn: str, balance_minor: int = 0, **habits: Any) -> Subscriber:
        return self.billing.add_subscriber(msisdn, balance_minor, **habits)

    def balance(self, msisdn: str) -> int | None:
        return self.billing.balance(msisdn)

    def texts_to(self, msisdn: str) -> list[str]:
        """The texts a subscriber's handset received, oldest first (tests read PINs here)."""
        return [message.text for message in self.texts if message.msisdn == msisdn]

    def deliver_text(self, msisdn: str, text: str, sender: str = "", reference: str = "") -> TextMessage:
        """Put an SMS on a handset; a repeat with the same non-empty reference delivers nothing new."""
        if reference and reference in self._texts_by_reference:
            return self._texts_by_reference[reference]
        message = TextMessage(f"SM{len(self.texts) + 1:08d}", msisdn, text, sender, self.clock.now(), reference)
        self.texts.append(message)
        if reference:
            self._texts_by_reference[reference] = message
        return message

    def major(self, amount_minor: int) -> str:
        return str(Decimal(amount_minor).scaleb(-self.exponent).quantize(Decimal(1).scaleb(-self.exponent)))

    def minor(self, text: Any) -> int | None:
        """A major-unit decimal from the wire in minor units; None for malformed or sub-minor amounts."""
        try:
            value = Decimal(str(text)).scaleb(self.exponent)
        except (InvalidOperation, ValueError):
            return None
        if value != value.to_integral_value() or value <= 0:
            return None
        return int(value)

    # -------------------------------------------------------------- lifecycle

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> Simulator:
        app = web.Application(middlewares=[self._record_middleware])
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await self._listen(0)
        port = self._runner.addresses[0][1]
        scheme = "https" if self.ssl_context else "http"
        self.url = f"{scheme}://127.0.0.1:{port}"
        return self

    async def _listen(self, port: int) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", port, ssl_context=self.ssl_context)
        await self._site.start()

    @property
    def down(self) -> bool:
        return self._runner is not None and self._site is None

    async def go_down(self) -> None:
        """The carrier becomes unreachable: the port refuses connections and every open connection
        is cut (a request being handled is still applied, its answer is lost). State and ledger stay."""
        if self._site is None:
            return
        await self._site.stop()
        self._site = None
        assert self._runner is not None and self._runner.server is not None
        for handler in self._runner.server.connections:
            if handler.transport is not None:
                handler.transport.abort()

    async def come_back(self) -> None:
        """Listen again on the same port (the URL the carrier's spec points at)."""
        if self._site is None and self._runner is not None:
            await self._listen(int(self.url.rsplit(":", 1)[1]))

    async def stop(self) -> None:
        self._closing.set()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._site = None

    async def __aenter__(self) -> Simulator:
        return await self.start()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.stop()

    def spawn(self, coroutine: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @web.middleware
    async def _record_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self.record_requests:
            return await handler(request)
        body = await request.read()
        self.received.append(
            {"method": request.method, "path": request.path, "query": dict(request.query),
             "headers": dict(request.headers), "body": body.decode("utf-8", errors="replace"),
             "client_cert": _client_name(request)}
        )  # fmt: skip
        return await handler(request)

    # -------------------------------------------------------------- shared behaviour for handlers

    async def latency(self) -> None:
        delay = self.faults.latency_s + self.rng.uniform(0, self.faults.latency_jitter_s)
        if delay > 0:
            await asyncio.sleep(delay)

    def over_budget(self) -> bool:
        """True when this request must be throttled (TPS window exhausted or a random throttle)."""
        if self.faults.tps_limit is not None:
            window = int(time.monotonic() / self.faults.tps_window_s)
            current, count = self._window
            count = count + 1 if current == window else 1
            self._window = (window, count)
            if count > self.faults.tps_limit:
                return True
        return self.faults.throttle_rate > 0 and self.rng.random() < self.faults.throttle_rate

    def pre_fault(self, operation: str) -> str | None:
        """The fault to act on for this request, if any: injected first, then random rates."""
        fault = self.faults.take(operation)
        if fault:
            return fault
        if self.over_budget():
            return "throttle"
        if self.faults.transient_rate > 0 and self.rng.random() < self.faults.transient_rate:
            return "transient"
        return None

    async def after_apply(self, fault: str | None, request: web.Request, operation: str | None = None) -> None:
        """Misbehave after the effect is applied: hold the answer while the carrier is stalled
        (`faults.hold`), answer too late, or hang up (the answer then goes nowhere)."""
        gate = self.faults.holds.get(operation) or self.faults.holds.get(None)
        if gate is not None:
            closing = asyncio.ensure_future(self._closing.wait())
            released = asyncio.ensure_future(gate.wait())
            await asyncio.wait([closing, released], return_when=asyncio.FIRST_COMPLETED)
            closing.cancel()
            released.cancel()
        if fault == "timeout_after_charge":
            try:
                await asyncio.wait_for(self._closing.wait(), self.faults.late_response_s)
            except TimeoutError:
                pass
        elif fault == "drop_after_charge" and request.transport is not None:
            request.transport.abort()

    @staticmethod
    def garbage_response(fault: str) -> web.Response | None:
        if fault == "garbage":
            return web.Response(status=200, body=b"\x00\x17OK??<<", content_type="application/json")
        if fault == "html_error":
            html = "<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"
            return web.Response(status=502, text=html, content_type="text/html")
        if fault == "wrong_content_type":
            return web.Response(status=200, text='{"status": "ok"}', content_type="text/html")
        return None


def _client_name(request: web.Request) -> str | None:
    """The common name of the client certificate the request came with (mutual TLS), else None."""
    peer = request.transport.get_extra_info("peercert") if request.transport is not None else None
    for rdn in (peer or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return value
    return None
