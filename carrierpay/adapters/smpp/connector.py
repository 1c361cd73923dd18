"""SMPP 3.4 ESME connector: one transceiver bind per connector, on top of aiosmpplib.

aiosmpplib owns the socket, the bind, enquire_link, re-binding and PDU encoding. This module adds
what a payment platform needs on top: a window of outstanding submit_sm, a send rate, a pause after
throttling errors, our own text encoding and concatenation, premium pricing fields, and an exact
account of every submit (accepted with an id, refused, or unknown) across connection drops.

Resend rule: a submit_sm whose submit_sm_resp never arrived is reported `unknown` and is never
re-sent here, because the SMSC may have delivered it (and, for a premium MT, charged for it).
Whether the call may be sent again is not this module's decision: the database answers it from the
carrier spec's `safe_to_repeat` (`cp.may_send_again`). A submit refused with an error status, or
never written to the socket, did not reach the SMSC: it is reported `failed`.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import itertools
import logging
import struct
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from aiosmpplib import ESME, PhoneNumber, SmppError, SubmitSm
from aiosmpplib.broker import AbstractBroker
from aiosmpplib.correlator import SimpleCorrelator
from aiosmpplib.hook import AbstractHook
from aiosmpplib.protocol import DeliverSm, GenericNack, SubmitSmResp
from aiosmpplib.ratelimiter import AbstractRateLimiter
from aiosmpplib.retrytimer import AbstractRetryTimer
from aiosmpplib.state import NPI, TON, BindMode, OptionalParam, SmppCommand, SmppCommandStatus, SmppSessionState
from aiosmpplib.throttle import AbstractThrottleHandler

from carrierpay.logmask import mask_msisdn

from . import dlr, gsm
from .config import SmppConfig, check_bind_credentials, load_smpp_config, resolve_secret

log = logging.getLogger("carrierpay.smpp")

ESME_ROK = 0x00
ESME_RMSGQFUL = 0x14
ESME_RTHROTTLED = 0x58
THROTTLE_STATUSES = (ESME_RTHROTTLED, ESME_RMSGQFUL)
# Refusals where retrying later can work; anything else unlisted is a permanent rejection.
TRANSIENT_STATUSES = {0x08, 0x45, 0xFE, 0xFF}
SUBSCRIBER_STATUSES = {0x0B, 0x50, 0x51}

_ALPHABET_TO_ENCODING = {"gsm7": "gsm0338", "ucs2": "ucs2", "latin1": "latin_1", "ascii": "ascii"}

MoCallback = Callable[[dict], Awaitable[None] | None]
ReceiptCallback = Callable[[dict], Awaitable[None] | None]


class SmppBindError(ConnectionError):
    """The SMSC refused the bind (wrong credentials, unknown system_id, ...)."""

    def __init__(self, command_status: int, name: str) -> None:
        super().__init__(f"SMSC refused bind: {name} (0x{command_status:08X})")
        self.command_status = command_status


def _hex(status: int | None) -> str | None:
    return None if status is None else f"0x{status:08X}"


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


@dataclass
class _Part:
    """One submit_sm handed to the library, followed until its fate is known."""

    log_id: str
    submit: SubmitSm
    future: asyncio.Future
    state: str = "queued"  # queued -> taken (by the sender loop) -> written; or cancelled
    seq: int = 0
    timer: asyncio.TimerHandle | None = None


@dataclass
class _PartResult:
    kind: str  # "resp" | "nack" | "unknown" | "not_sent"
    status: int | None = None
    message_id: str | None = None
    why: str | None = None
    attempts: int = 1


@dataclass
class _MoParts:
    parts: dict[int, str] = field(default_factory=dict)
    first_seen: float = field(default_factory=time.monotonic)


class _Broker(AbstractBroker):
    """The queue the library's sender loop reads; tells the connector when a part leaves it."""

    def __init__(self, owner: SmppConnector) -> None:
        self._owner = owner
        self.queue: asyncio.Queue = asyncio.Queue()

    async def enqueue(self, message) -> None:
        self.queue.put_nowait(message)

    async def dequeue(self):
        while True:
            message = await self.queue.get()
            if self._owner._taken(message):
                return message


class _Hook(AbstractHook):
    def __init__(self, owner: SmppConnector) -> None:
        self._owner = owner

    async def sending(self, smpp_message, pdu: bytes, client_id: str) -> None:
        if isinstance(smpp_message, SubmitSm):
            self._owner._writing(smpp_message)

    async def received(self, smpp_message, pdu: bytes, client_id: str) -> None:
        if smpp_message is None:
            self._owner._last_unparsed = pdu
        try:
            await self._owner._received(smpp_message, pdu)
        except Exception:  # a callback bug must not take the session down with it
            log.exception("error handling a PDU from the SMSC")

    async def send_error(self, smpp_message, error: Exception, client_id: str) -> None:
        if isinstance(smpp_message, SubmitSm):
            self._owner._send_error(smpp_message, error)


class _PauseThrottle(AbstractThrottleHandler):
    """After a throttling status, hold every submit for the configured pause (some SMSCs ask for 60 s)."""

    def __init__(self, pause_s: float) -> None:
        self.pause_s = pause_s
        self.until = 0.0
        self.throttled_count = 0

    async def throttled(self) -> None:
        self.throttled_count += 1
        self.until = time.monotonic() + self.pause_s

    async def not_throttled(self) -> None:
        pass

    async def allow_request(self) -> bool:
        return time.monotonic() >= self.until

    async def throttle_delay(self) -> float:
        return max(0.001, self.until - time.monotonic())


class _RateLimiter(AbstractRateLimiter):
    """Evenly spaced submits, no bursts: carriers count per second and some per 100 ms."""

    def __init__(self, tps: float) -> None:
        self.interval = 1.0 / tps
        self.next_at = 0.0

    async def limit(self) -> None:
        now = time.monotonic()
        if self.next_at > now:
            await asyncio.sleep(self.next_at - now)
            now = time.monotonic()
        self.next_at = max(now, self.next_at) + self.interval


class _ReconnectTimer(AbstractRetryTimer):
    """The library waits on this after every lost session, which is the moment to settle what was in flight."""

    def __init__(self, owner: SmppConnector, first: float, maximum: float) -> None:
        self._owner = owner
        self.first = first
        self.maximum = maximum
        self.delay = first

    async def wait(self) -> None:
        self._owner._session_lost("connection_lost")
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, self.maximum)

    def reset(self) -> None:
        self.delay = self.first

    def next_delay(self) -> float:
        return self.delay


class _Esme(ESME):
    """aiosmpplib's ESME with three repairs, each for an input a real SMSC can send."""

    def __init__(self, owner: SmppConnector, **kwargs) -> None:
        super().__init__(**kwargs)
        self._owner = owner

    async def connect(self) -> None:
        if self._session_state == self.bind_mode.session_state:
            return
        # A response can only come on the session that carried the request: whatever the old
        # session left unanswered is settled now, before the new bind.
        self._owner._session_lost("connection_lost")
        self._owner._last_unparsed = b""
        try:
            await super().connect()
        except ValueError:
            # SMPP 3.4 (4.1.2) lets an SMSC omit the body of a failed bind_resp; the library insists
            # on one and raises ValueError, hiding the status we need to report.
            self._close_transport()
            raw = self._owner._last_unparsed
            if len(raw) >= 16:
                _, command_id, status, _ = struct.unpack("!IIII", raw[:16])
                if command_id == int(SmppCommand.BIND_TRANSCEIVER_RESP) and status:
                    raise SmppError(SmppCommand.BIND_TRANSCEIVER_RESP, _status(status)) from None
            raise
        except BaseException:
            self._close_transport()
            raise
        self._owner._bound_ok()

    def _close_transport(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    async def _handle_request(self, pdu: bytes, header):
        # The library parses receipts itself with int()/strptime() on every field; a receipt with
        # `err:ABC` or a 12-digit date raises out of the receive loop and the session drops, the
        # SMSC redelivers, and so on forever. We only need the decoded deliver_sm: receipts are
        # matched by id in the database, and concatenated MO parts are joined by the connector.
        if header.smpp_command == SmppCommand.DELIVER_SM:
            try:
                return DeliverSm.from_pdu(pdu, header, self.default_encoding, self.custom_codecs)
            except Exception:
                pass
            try:
                # e.g. a receipt carried only in TLVs, with an empty short_message the library refuses
                return _parse_deliver_sm(pdu)
            except Exception:
                # Not the PDU itself: it holds the sender's number and the text in hex.
                log.warning("malformed deliver_sm from SMSC (%d bytes, sequence %d)", len(pdu),
                            header.sequence_num)
                await self._send_data(GenericNack(header.sequence_num, SmppCommandStatus.ESME_RSYSERR))
                return None
        return await super()._handle_request(pdu, header)

    async def _receive_data(self):
        try:
            return await super()._receive_data()
        finally:
            # The library keeps the sender running for up to a second while it winds a dead session
            # down; anything written then can never be answered. Stop it from writing at once.
            self._session_state = SmppSessionState.CLOSED
            self._bound.clear()
            self._owner._bound.clear()

    async def _end_task(self, task: asyncio.Task) -> None:
        # The library gives each task half a second to finish after the session ended. The sender
        # and the keep-alive only ever wait there (on the queue or a timer), so that is dead time
        # on every re-bind and stop; the part bookkeeping copes with a sender cut off anywhere.
        if task.get_name() in ("Sender", "Connection keeper"):
            await self._cancel_task(task, task.get_name())
            return
        await super()._end_task(task)

    async def start(self) -> None:
        # The library lets exceptions other than transport/ValueError escape start(), which would
        # stop re-binding for good. Treat them as one more lost session.
        while not self._is_shutting_down:
            try:
                await super().start()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("SMPP session failed; re-binding")
                self._bound.clear()
                self._session_state = SmppSessionState.CLOSED
                self._close_transport()
                await self.retry_timer.wait()


def _status(value: int) -> SmppCommandStatus:
    try:
        return SmppCommandStatus(value)
    except ValueError:
        return SmppCommandStatus.ESME_RUNKNOWNERR


# TLVs whose value is an unsigned integer (SMPP 3.4 section 5.3.2), by length in octets.
_INT_TLVS = {0x0427, 0x0204, 0x020C, 0x020E, 0x020F, 0x0005, 0x0006, 0x0008, 0x000D, 0x000F, 0x0010}


def _parse_deliver_sm(pdu: bytes) -> DeliverSm:
    """A lenient deliver_sm decoder for what the library's strict one refuses."""
    pos = 16

    def cstr() -> str:
        nonlocal pos
        end = pdu.index(b"\x00", pos)
        value = pdu[pos:end].decode("latin-1")
        pos = end + 1
        return value

    def u8() -> int:
        nonlocal pos
        pos += 1
        return pdu[pos - 1]

    def enum(cls, value):
        try:
            return cls(value)
        except ValueError:
            return cls(0)

    service_type = cstr()
    src_ton, src_npi = u8(), u8()
    source = PhoneNumber(cstr()[:20], enum(TON, src_ton), enum(NPI, src_npi))
    dst_ton, dst_npi = u8(), u8()
    destination = PhoneNumber(cstr()[:20], enum(TON, dst_ton), enum(NPI, dst_npi))
    esm_class, _protocol_id, _priority = u8(), u8(), u8()
    cstr(), cstr()  # schedule_delivery_time, validity_period
    registered_delivery, _replace, data_coding, _default_id, sm_length = u8(), u8(), u8(), u8(), u8()
    raw = pdu[pos : pos + sm_length]
    pos += sm_length
    tlvs = []
    while pos + 4 <= len(pdu):
        tag, length = struct.unpack_from("!HH", pdu, pos)
        value = pdu[pos + 4 : pos + 4 + length]
        pos += 4 + length
        if tag == 0x0424:  # message_payload stands in for short_message
            raw = raw or value
            continue
        tlvs.append(SimpleNamespace(tag=tag, value=int.from_bytes(value, "big") if tag in _INT_TLVS else value))
    if esm_class & gsm.UDHI:
        concat, raw = gsm.parse_udh(raw)
        if concat:
            tlvs += [SimpleNamespace(tag=0x020C, value=concat[0]), SimpleNamespace(tag=0x020E, value=concat[1]),
                     SimpleNamespace(tag=0x020F, value=concat[2])]
    message = DeliverSm(short_message="-", source=source, destination=destination, service_type=service_type[:5],
                        esm_class=esm_class, registered_delivery=registered_delivery)
    # Set after construction: the dataclass refuses an empty text, which is legal on the wire.
    message.short_message = gsm.decode(raw, data_coding)
    message.optional_params = tlvs
    message.encoding = "ucs2" if data_coding == gsm.DCS_UCS2 else None
    return message


class SmppConnector:
    """An SMPP 3.4 transceiver for one carrier.

    `send(call)` submits one carrier call and returns once the SMSC has answered (or the answer can
    no longer come); receipts and MO messages arrive later through `on_receipt` and `on_mo`, which
    may be plain functions or coroutines. The deliver_sm_resp is sent only after the callback
    returns, so a daemon that dies mid-callback leaves the message unacknowledged and the SMSC
    delivers it again (hence duplicate MO, which carry the same `carrier_msg_id`).
    """

    def __init__(
        self,
        config: SmppConfig | Mapping[str, Any],
        secrets: Mapping[str, str] | None = None,
        *,
        on_mo: MoCallback | None = None,
        on_receipt: ReceiptCallback | None = None,
        carrier_code: str = "",
        log_level: str | int = "WARNING",
    ) -> None:
        self.config = config if isinstance(config, SmppConfig) else load_smpp_config(config)
        password = resolve_secret(self.config.password_secret, secrets)
        check_bind_credentials(self.config.system_id, password, self.config.system_type)
        self.carrier_code = carrier_code
        self.on_mo = on_mo
        self.on_receipt = on_receipt
        self.binds = 0
        self._last_unparsed = b""
        self._window = asyncio.Semaphore(self.config.window)
        self._parts: dict[str, _Part] = {}
        self._by_seq: dict[int, _Part] = {}
        self._ids = itertools.count(1)
        self._refs = itertools.count(int(time.time()) & 0xFF)
        self._mo_parts: dict[tuple, _MoParts] = {}
        self._bound = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._throttle = _PauseThrottle(self.config.throttle_pause_s)
        self._esme = _Esme(
            self,
            smsc_host=self.config.host,
            smsc_port=self.config.port,
            system_id=self.config.system_id,
            password=password,
            system_type=self.config.system_type,
            bind_mode=BindMode.TRANSCEIVER,
            enquire_link_interval=float(self.config.enquire_link_interval_s),
            log_level=log_level,
            hook=_Hook(self),
            broker=_Broker(self),
            rate_limiter=_RateLimiter(self.config.tps) if self.config.tps else None,
            throttle_handler=self._throttle,
            correlator=SimpleCorrelator(
                f"carrierpay-{self.config.system_id}", max_ttl_response=max(1.0, self.config.response_timeout_s)
            ),
            retry_timer=_ReconnectTimer(self, self.config.reconnect_delay_s, self.config.reconnect_max_delay_s),
            socket_timeout=float(max(1.0, self.config.response_timeout_s)),
        )

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind once in the foreground so a refused bind reaches the caller, then keep the session up."""
        try:
            await self._esme.connect()
        except SmppError as err:
            raise SmppBindError(int(err.command_status), err.command_status.name) from err
        self._task = asyncio.create_task(self._esme.start(), name=f"smpp-{self.config.system_id}")

    async def stop(self) -> None:
        if self._task is None:
            return
        task, self._task = self._task, None
        try:
            await asyncio.wait_for(self._esme.stop(), 2.0)
        except (TimeoutError, OSError):
            pass
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self._esme._close_transport()
        self._bound.clear()
        for part in list(self._parts.values()):
            self._resolve(part, _PartResult("unknown" if part.state == "written" else "not_sent", why="stopped"))

    async def __aenter__(self) -> SmppConnector:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    @property
    def bound(self) -> bool:
        return self._bound.is_set()

    async def wait_bound(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._bound.wait(), timeout)

    @property
    def throttled_count(self) -> int:
        return self._throttle.throttled_count

    # ---- sending ---------------------------------------------------------------------------

    async def send(self, call: Mapping[str, Any]) -> dict:
        """Submit one carrier call (`send_sms` or premium `charge`) and report what the SMSC said."""
        started = time.monotonic()
        result: dict[str, Any] = {
            "call_id": call.get("call_id"),
            "outcome": "failed",
            "reason": None,
            "carrier_ref": None,
            "carrier_refs": [],
            "carrier_code": None,
            "latency_ms": 0,
            "request": {},
            "response": {},
        }
        try:
            request, segments = self._build(call)
        except (ValueError, KeyError) as err:
            result.update(reason="rejected", response={"error": str(err)})
            result["latency_ms"] = int((time.monotonic() - started) * 1000)
            return result
        result["request"] = request

        ids: list[str] = []
        parts_out: list[dict] = []
        last: _PartResult | None = None
        for index, (segment, kwargs) in enumerate(segments):
            last = await self._submit_part(call, index, segment, kwargs)
            parts_out.append(
                {"part": segment.part, "kind": last.kind, "command_status": _hex(last.status),
                 "message_id": last.message_id, "attempts": last.attempts, "why": last.why}
            )
            if last.kind == "resp" and last.status == ESME_ROK:
                ids.append(last.message_id or "")
                continue
            break
        assert last is not None
        result["response"] = {"parts": parts_out}
        result["carrier_refs"] = ids
        result["carrier_ref"] = ",".join(ids) or None
        result["carrier_code"] = _hex(last.status)
        if len(ids) == len(segments):
            result.update(outcome="pending", reason=None)
        elif last.kind == "unknown" or ids:
            # Either the SMSC may have this part, or earlier parts already went out.
            result.update(outcome="unknown", reason=last.why or "partial")
        elif last.kind == "not_sent":
            # Nothing left our machine (no bound session): the call is held and tried again, like an
            # HTTP carrier that refuses connections, so an SMSC down for minutes costs no payment.
            result.update(outcome="failed", reason="unreachable")
        else:
            result.update(outcome="failed", reason=self._status_reason(last.status, last.kind))
        result["latency_ms"] = int((time.monotonic() - started) * 1000)
        return result

    def _status_reason(self, status: int | None, kind: str) -> str:
        if status is not None and status in self.config.command_status_map:
            return self.config.command_status_map[status]
        if kind == "nack":
            return "rejected"
        if status in THROTTLE_STATUSES:
            return "throttled"
        if status in TRANSIENT_STATUSES:
            return "transient"
        if status in SUBSCRIBER_STATUSES:
            return "subscriber_invalid"
        return "rejected"

    def _build(self, call: Mapping[str, Any]) -> tuple[dict, list[tuple[gsm.Segment, dict]]]:
        cfg = self.config
        operation = call.get("operation")
        if operation not in ("send_sms", "charge"):
            raise ValueError(f"operation {operation!r} is not supported over SMPP")
        text = call.get("text") or ""
        if not text:
            raise ValueError("text is empty")
        msisdn = str(call["msisdn"]).lstrip("+")
        if not msisdn.isdigit():
            raise ValueError(f"msisdn {mask_msisdn(call['msisdn'])} is not an E.164 number")
        short_code = call.get("short_code") or cfg.short_code
        service_type = ""
        tlvs: list[OptionalParam] = []
        request: dict[str, Any] = {"operation": operation, "correlator": call.get("correlator"), "msisdn": msisdn}
        if operation == "charge":
            pp = cfg.price_point(int(call["amount_minor"]), call.get("currency"))
            if pp is None:
                raise ValueError(f"no price point for {call.get('amount_minor')} {call.get('currency') or ''}".strip())
            if cfg.pricing == "short_code":
                short_code = pp.short_code
            elif cfg.pricing == "service_type":
                service_type = pp.service_type or ""
            elif cfg.pricing == "tlv" and pp.tlv:
                tag = pp.tlv["tag"]
                tag = int(tag, 16) if isinstance(tag, str) else int(tag)
                value = str(pp.tlv["value"])
                if pp.tlv.get("encoding", "cstring") == "cstring":
                    value += "\x00"
                tlvs.append(OptionalParam(tag, value))
                request["tlv"] = {"tag": f"0x{tag:04X}", "value": str(pp.tlv["value"])}
            request.update(amount_minor=pp.amount_minor, currency=pp.currency or call.get("currency"))
        segments = gsm.split(text, ref=next(self._refs), default=cfg.default_data_coding, max_parts=cfg.max_parts)
        # The text itself is left out of the request log: it may carry a PIN.
        request.update(
            source_addr=short_code,
            service_type=service_type,
            data_coding=segments[0].data_coding,
            alphabet=segments[0].alphabet,
            text_chars=len(text),
            parts=len(segments),
        )
        out = []
        for seg in segments:
            out.append(
                (
                    seg,
                    dict(
                        source=PhoneNumber(short_code, TON(cfg.source_addr_ton), NPI(cfg.source_addr_npi)),
                        destination=PhoneNumber(msisdn, TON(cfg.dest_addr_ton), NPI(cfg.dest_addr_npi)),
                        service_type=service_type,
                        esm_class=seg.esm_class,
                        registered_delivery=cfg.registered_delivery,
                        encoding=_ALPHABET_TO_ENCODING[seg.alphabet],
                        optional_params=list(tlvs),
                    ),
                )
            )
        return request, out

    async def _submit_part(
        self, call: Mapping[str, Any], index: int, segment: gsm.Segment, kwargs: dict
    ) -> _PartResult:
        attempts = 0
        while True:
            attempts += 1
            async with self._window:
                log_id = f"{call.get('correlator') or call.get('call_id')}#{index + 1}.{next(self._ids)}"
                submit = SubmitSm(short_message="-", log_id=log_id, **kwargs)
                submit.set_encoded_message(segment.short_message)
                part = _Part(log_id, submit, asyncio.get_running_loop().create_future())
                self._parts[log_id] = part
                # A part still unsent after this long is withdrawn rather than left to go out late.
                queue_deadline = self.config.response_timeout_s + self.config.throttle_pause_s
                part.timer = asyncio.get_running_loop().call_later(queue_deadline, self._expire_unsent, part)
                await self._esme.broker.enqueue(submit)
                result: _PartResult = await part.future
            result.attempts = attempts
            throttled = result.kind == "resp" and result.status in THROTTLE_STATUSES
            if throttled and attempts <= self.config.throttle_max_retries:
                continue  # refused outright, so resubmitting cannot duplicate; the pause is in _PauseThrottle
            return result

    # ---- part bookkeeping (called from the library's tasks) --------------------------------

    def _resolve(self, part: _Part, result: _PartResult) -> None:
        self._parts.pop(part.log_id, None)
        if part.seq:
            self._by_seq.pop(part.seq, None)
        if part.timer is not None:
            part.timer.cancel()
        if part.state != "written":
            part.state = "cancelled"
        if not part.future.done():
            part.future.set_result(result)

    def _taken(self, message) -> bool:
        part = self._parts.get(getattr(message, "log_id", ""))
        if part is None or part.state == "cancelled":
            return False
        part.state = "taken"
        return True

    def _writing(self, message: SubmitSm) -> None:
        part = self._parts.get(message.log_id)
        if part is None or part.state == "cancelled":
            # Raising ValueError makes the library drop just this message, not the session.
            raise ValueError("submit withdrawn before it was written")
        part.state = "written"
        part.seq = message.sequence_num
        self._by_seq[part.seq] = part
        if part.timer is not None:
            part.timer.cancel()
        part.timer = asyncio.get_running_loop().call_later(
            self.config.response_timeout_s, self._resolve, part, _PartResult("unknown", why="timeout")
        )

    def _expire_unsent(self, part: _Part) -> None:
        if part.state in ("queued", "taken"):
            self._resolve(part, _PartResult("not_sent", why="not_connected"))

    def _send_error(self, message: SubmitSm, error: Exception) -> None:
        part = self._parts.get(message.log_id)
        if part is None:
            return
        if part.state == "written":
            why = "timeout" if isinstance(error, TimeoutError) else "io_error"
            self._resolve(part, _PartResult("unknown", why=why))
        else:
            self._resolve(part, _PartResult("not_sent", why=type(error).__name__))

    def _session_lost(self, why: str) -> None:
        self._bound.clear()
        for part in list(self._parts.values()):
            if part.state == "written":
                self._resolve(part, _PartResult("unknown", why=why))
            elif part.state == "taken":
                # Taken by the sender loop but never written: safe to queue again for the next bind.
                part.state = "queued"
                self._esme.broker.queue.put_nowait(part.submit)

    def _bound_ok(self) -> None:
        self.binds += 1
        self._bound.set()

    # ---- inbound ---------------------------------------------------------------------------

    async def _received(self, message, pdu: bytes) -> None:
        if isinstance(message, (SubmitSmResp, GenericNack)) and message.sequence_num in self._by_seq:
            part = self._by_seq[message.sequence_num]
            if isinstance(message, SubmitSmResp):
                self._resolve(part, _PartResult("resp", int(message.command_status), message.message_id or None))
            else:
                self._resolve(part, _PartResult("nack", int(message.command_status)))
        elif isinstance(message, DeliverSm):
            await self._deliver(message)

    def _is_receipt(self, message: DeliverSm, tlvs: dict, text: str) -> bool:
        detect = self.config.dlr_detect
        if "esm_class" in detect and message.is_receipt():
            return True
        if "tlv" in detect and dlr.TLV_RECEIPTED_MESSAGE_ID in tlvs and dlr.TLV_MESSAGE_STATE in tlvs:
            return True
        return "text" in detect and dlr.is_receipt_text(text)

    async def _deliver(self, message: DeliverSm) -> None:
        tlvs = {p.tag: p.value for p in (message.optional_params or []) if p.tag not in (0x020C, 0x020E, 0x020F)}
        text = message.short_message or message.message_payload or ""
        msisdn = message.source.number
        msisdn = f"+{msisdn}" if msisdn.isdigit() and len(msisdn) >= 8 else msisdn
        if self._is_receipt(message, tlvs, text):
            receipt = dlr.parse_receipt(
                text, tlvs, error_map=self.config.dlr_error_map, id_format=self.config.dlr_id_format
            ).as_dict()
            receipt.update(msisdn=msisdn, short_code=message.destination.number, received_at=_now_iso())
            await _call(self.on_receipt, receipt)
            return
        if message.is_segmented():
            text = self._join_mo(message, text)
            if text is None:
                return
        mo_id = None
        if self.config.mo_id_tlv is not None and self.config.mo_id_tlv in tlvs:
            raw_id = tlvs[self.config.mo_id_tlv]
            mo_id = (raw_id.decode("latin-1") if isinstance(raw_id, bytes) else str(raw_id)).rstrip("\x00")
        if not mo_id:
            # Without an SMSC id, a redelivered MO is recognisable only by content and minute.
            minute = datetime.now(UTC).strftime("%Y%m%d%H%M")
            digest = hashlib.sha1(f"{msisdn}|{message.destination.number}|{text}|{minute}".encode()).hexdigest()
            mo_id = f"h:{digest[:20]}"
        await _call(
            self.on_mo,
            {
                "msisdn": msisdn,
                "short_code": message.destination.number,
                "text": text,
                "carrier_msg_id": mo_id,
                "received_at": _now_iso(),
                "data_coding": message.encoding or "gsm0338",
                "service_type": message.service_type or None,
            },
        )

    def _join_mo(self, message: DeliverSm, text: str) -> str | None:
        ref, seq, total = message.get_segmentation_data()
        key = (message.source.number, message.destination.number, ref, total)
        entry = self._mo_parts.setdefault(key, _MoParts())
        entry.parts[seq] = text
        # Forget halves that never completed so the table cannot grow without bound.
        stale = time.monotonic() - 3600
        for k in [k for k, v in self._mo_parts.items() if v.first_seen < stale]:
            del self._mo_parts[k]
        if len(entry.parts) < total:
            return None
        del self._mo_parts[key]
        return "".join(entry.parts[i] for i in sorted(entry.parts))


async def _call(callback, payload: dict) -> None:
    if callback is None:
        return
    result = callback(payload)
    if inspect.isawaitable(result):
        await result
