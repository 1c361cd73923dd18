"""An SMSC simulator speaking SMPP 3.4 over TCP, for tests, the demo and benchmarks.

It is built on a different SMPP implementation from the connector (the `smpp34` codec, while the
connector uses aiosmpplib), so a mistake in one library's encoding shows up as a failure instead of
cancelling out. smpp34's own asyncio server is not used: it cannot report its ephemeral port,
refuse a bind, drop a connection on demand or write arbitrary bytes, all of which the tests need.
Framing and the small fixed-layout PDUs (bind, enquire_link, unbind, responses) are done here; the
variable ones (submit_sm, deliver_sm and their TLVs) go through smpp34. GSM text is decoded with
the independent `gsm0338` codec.

The simulator keeps prepaid balances and charges a premium MT when it is delivered, recording the
charge in its own ledger: that ledger is the ground truth tests compare the platform against.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import random
import struct
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import gsm0338  # noqa: F401  (registers the "gsm03.38" codec)
import smpp34

log = logging.getLogger("carrierpay.simulators.smsc")

BIND_RECEIVER, BIND_TRANSMITTER, BIND_TRANSCEIVER = 0x01, 0x02, 0x09
SUBMIT_SM, DELIVER_SM, UNBIND, ENQUIRE_LINK = 0x04, 0x05, 0x06, 0x15
GENERIC_NACK = 0x80000000
RESP = 0x80000000

ESME_ROK = 0x00
ESME_RINVMSGLEN = 0x01
ESME_RINVCMDLEN = 0x02
ESME_RINVCMDID = 0x03
ESME_RINVBNDSTS = 0x04
ESME_RALYBND = 0x05
ESME_RSYSERR = 0x08
ESME_RBINDFAIL = 0x0D
ESME_RINVPASWD = 0x0E
ESME_RINVSYSID = 0x0F
ESME_RMSGQFUL = 0x14
ESME_RTHROTTLED = 0x58

TLV_RECEIPTED_MESSAGE_ID = 0x001E
TLV_MESSAGE_STATE = 0x0427
TLV_NETWORK_ERROR_CODE = 0x0423
MESSAGE_STATE = {"DELIVRD": 2, "EXPIRED": 3, "UNDELIV": 5, "REJECTD": 8}

MAX_PDU = 64 * 1024
DLR_MODES = ("standard", "csv", "reordered", "tlv", "none")


def _pdu(command_id: int, status: int, seq: int, body: bytes = b"") -> bytes:
    return struct.pack("!IIII", 16 + len(body), command_id, status, seq) + body


def _cstrings(body: bytes, count: int) -> tuple[list[str], int]:
    out, pos = [], 0
    for _ in range(count):
        end = body.index(b"\x00", pos)  # ValueError on a missing terminator: caller NACKs
        out.append(body[pos:end].decode("ascii"))
        pos = end + 1
    return out, pos


def _decode_text(data: bytes, data_coding: int) -> str:
    if data_coding == 0x08:
        return data.decode("utf-16-be", errors="replace")
    if data_coding == 0x00:
        return data.decode("gsm03.38", errors="replace")
    if data_coding == 0x01:
        return data.decode("ascii", errors="replace")
    return data.decode("latin-1")


def _encode_text(text: str) -> tuple[bytes, int]:
    try:
        return text.encode("gsm03.38"), 0x00
    except UnicodeEncodeError:
        return text.encode("utf-16-be"), 0x08


def _udh(short_message: bytes) -> tuple[tuple[int, int, int] | None, bytes]:
    if not short_message:
        return None, b""
    n = short_message[0]
    udh, body = short_message[1 : 1 + n], short_message[1 + n :]
    i, concat = 0, None
    while i + 2 <= len(udh):
        iei, iel = udh[i], udh[i + 1]
        v = udh[i + 2 : i + 2 + iel]
        if iei == 0x00 and iel == 3 and len(v) == 3:
            concat = (v[0], v[1], v[2])
        elif iei == 0x08 and iel == 4 and len(v) == 4:
            concat = ((v[0] << 8) | v[1], v[2], v[3])
        i += 2 + iel
    return concat, body


@dataclass
class Submit:
    """One submit_sm as the SMSC received it."""

    session: int
    seq: int
    msisdn: str
    source: str
    service_type: str
    esm_class: int
    data_coding: int
    short_message: bytes
    tlvs: dict[int, bytes]
    registered_delivery: int
    status: int | None = None
    message_id: str | None = None
    received_at: float = field(default_factory=time.time)


@dataclass
class Delivered:
    """A complete message delivered to a handset (concatenated parts already joined)."""

    msisdn: str
    short_code: str
    text: str
    message_ids: list[str]
    service_type: str
    amount_minor: int | None


class _Session:
    ids = itertools.count(1)

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.id = next(self.ids)
        self.writer = writer
        self.bound: str | None = None  # "trx" / "tx" / "rx"
        self.seq = itertools.count(1)
        self.pending: dict[int, asyncio.Future] = {}
        self.held: list[bytes] = []

    @property
    def can_receive(self) -> bool:
        return self.bound in ("trx", "rx")

    def write(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)


class SmscSimulator:
    """A seeded SMSC: `async with SmscSimulator(...) as smsc:` listens on 127.0.0.1, port `smsc.port`."""

    def __init__(
        self,
        *,
        system_id: str = "carrierpay",
        password: str = "secret",
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
        subscribers: Mapping[str, int] | None = None,
        default_balance: int = 0,
        currency: str = "ZAR",
        pricing: str = "short_code",
        price_points: Mapping[str, int] | None = None,
        premium_tlv_tag: int = 0x1401,
        no_credit_err: str = "069",
        dlr_delay: tuple[float, float] = (0.0, 0.0),
        dlr_mode: str = "standard",
        dlr_duplicates: bool = False,
        throttle_tps: float | None = None,
        mo_id_tlv: int = 0x1500,
        bind_fail_status: int = ESME_RINVPASWD,
        smsc_system_id: str = "SIMSMSC",
    ) -> None:
        if dlr_mode not in DLR_MODES:
            raise ValueError(f"dlr_mode must be one of {DLR_MODES}")
        self.system_id = system_id
        self.password = password
        self.host = host
        self.port = port
        self.rng = random.Random(seed)
        self.balances: dict[str, int] = {self._norm(k): v for k, v in (subscribers or {}).items()}
        self.default_balance = default_balance
        self.currency = currency
        self.pricing = pricing
        self.price_points = dict(price_points or {})
        self.premium_tlv_tag = premium_tlv_tag
        self.no_credit_err = no_credit_err
        self.dlr_delay = dlr_delay
        self.dlr_mode = dlr_mode
        self.dlr_duplicates = dlr_duplicates
        self.throttle_tps = throttle_tps
        self.mo_id_tlv = mo_id_tlv
        self.bind_fail_status = bind_fail_status
        self.smsc_system_id = smsc_system_id
        self.hold_responses = False

        self.submits: list[Submit] = []
        self.ledger: list[dict] = []
        self.delivered: list[Delivered] = []
        self.receipts_sent: list[dict] = []
        self.mo_sent: list[dict] = []
        self.bind_attempts = 0
        self.binds = 0
        self.nacks_sent = 0

        self._server: asyncio.base_events.Server | None = None
        self._sessions: dict[int, _Session] = {}
        self._outbox: deque[tuple[Callable[[int], bytes], asyncio.Future | None]] = deque()
        self._concat: dict[tuple, dict[int, Submit]] = {}
        self._throttle_next: list[int] = []
        self._fail_next: list[int] = []
        self._recent: deque[float] = deque()
        self._tasks: set[asyncio.Task] = set()
        self._msg_ids: set[str] = set()
        self._mo_ids = itertools.count(1)

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> SmscSimulator:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            for s in list(self._sessions.values()):
                s.writer.transport.abort()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def __aenter__(self) -> SmscSimulator:
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # ---- test / demo controls --------------------------------------------------------------

    def throttle_next(self, n: int, status: int = ESME_RTHROTTLED) -> None:
        """Refuse the next n submit_sm with a throttling status."""
        self._throttle_next.extend([status] * n)

    def fail_next(self, n: int, status: int = ESME_RSYSERR) -> None:
        self._fail_next.extend([status] * n)

    def drop_connections(self) -> None:
        """Cut every connection at once, as a crashing SMSC or a NAT timeout would."""
        for s in list(self._sessions.values()):
            s.writer.transport.abort()

    def send_raw(self, data: bytes) -> None:
        """Write arbitrary bytes to every bound session."""
        for s in self._sessions.values():
            if s.bound:
                s.write(data)

    def set_balance(self, msisdn: str, amount_minor: int) -> None:
        self.balances[self._norm(msisdn)] = amount_minor

    def balance(self, msisdn: str) -> int:
        return self.balances.get(self._norm(msisdn), self.default_balance)

    def messages_for(self, msisdn: str) -> list[Delivered]:
        m = self._norm(msisdn)
        return [d for d in self.delivered if d.msisdn == m]

    def texts_for(self, msisdn: str) -> list[str]:
        return [d.text for d in self.messages_for(msisdn)]

    def charges_for(self, msisdn: str) -> list[dict]:
        m = self._norm(msisdn)
        return [c for c in self.ledger if c["msisdn"] == m]

    @property
    def bound_sessions(self) -> int:
        return sum(1 for s in self._sessions.values() if s.bound)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not reached")
            await asyncio.sleep(0.005)

    async def inject_mo(
        self, msisdn: str, short_code: str, text: str, *, mo_id: str | None = None, duplicate: bool = False,
        data_coding: int | None = None,
    ) -> str:
        """Deliver an MO message from a subscriber; returns the SMSC's MO id (sent in the `mo_id_tlv` TLV)."""
        mo_id = mo_id or f"mo{next(self._mo_ids):06d}"
        if data_coding is None:
            data, dcs = _encode_text(text)
        else:
            dcs = data_coding
            data = text.encode("utf-16-be" if dcs == 0x08 else "latin-1")
        chunks = [data]
        limit = 140 if dcs == 0x08 else 160
        if len(data) > limit:
            chunks = self._chunk(text, dcs)
        ref = self.rng.randrange(256)
        for _ in range(2 if duplicate else 1):
            for i, chunk in enumerate(chunks, start=1):
                esm = 0x00
                if len(chunks) > 1:
                    chunk = bytes((5, 0, 3, ref, len(chunks), i)) + chunk
                    esm = 0x40
                pdu = smpp34.DeliverSm(
                    source_addr=self._norm(msisdn), destination_addr=short_code, short_message=chunk,
                    source_addr_ton=1, source_addr_npi=1, esm_class=esm, data_coding=dcs,
                    tlvs=[smpp34.Tlv(self.mo_id_tlv, mo_id.encode("ascii"))],
                )
                await self._push(pdu, wait=True)
        self.mo_sent.append({"msisdn": self._norm(msisdn), "short_code": short_code, "text": text, "mo_id": mo_id})
        return mo_id

    async def send_receipt(self, message_id: str, stat: str = "DELIVRD", err: str = "000", *,
                           msisdn: str = "27820000000", short_code: str = "0", text: str | None = None) -> None:
        """Send a receipt for any id, known or not (late or foreign receipts happen)."""
        body = text if text is not None else self._receipt_text(message_id, stat, err, "")
        pdu = smpp34.DeliverSm(source_addr=msisdn, destination_addr=short_code, short_message=body.encode("latin-1"),
                               esm_class=0x04)
        await self._push(pdu, wait=True)

    # ---- connection handling ---------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = _Session(writer)
        self._sessions[session.id] = session
        try:
            while True:
                header = await reader.readexactly(16)
                length, command_id, status, seq = struct.unpack("!IIII", header)
                if length < 16 or length > MAX_PDU:
                    # Framing is lost: nothing after this can be trusted, so answer and hang up.
                    session.write(_pdu(GENERIC_NACK, ESME_RINVCMDLEN, seq))
                    self.nacks_sent += 1
                    await writer.drain()
                    break
                body = await reader.readexactly(length - 16)
                if not await self._dispatch(session, header + body, command_id, status, seq, body):
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except Exception:
            log.exception("SMSC simulator session error")
        finally:
            self._sessions.pop(session.id, None)
            for fut in session.pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("session closed"))
            writer.transport.abort()

    async def _dispatch(self, s: _Session, pdu: bytes, command_id: int, status: int, seq: int, body: bytes) -> bool:
        if command_id in (BIND_TRANSCEIVER, BIND_TRANSMITTER, BIND_RECEIVER):
            return self._bind(s, command_id, seq, body)
        if command_id == ENQUIRE_LINK:
            s.write(_pdu(ENQUIRE_LINK | RESP, ESME_ROK, seq))
            return True
        if command_id == UNBIND:
            s.write(_pdu(UNBIND | RESP, ESME_ROK, seq))
            await s.writer.drain()
            return False
        if command_id & RESP:
            fut = s.pending.pop(seq, None)
            if fut is not None and not fut.done():
                fut.set_result(status if command_id != GENERIC_NACK else (status or ESME_RSYSERR))
            return True
        if command_id == SUBMIT_SM:
            if not s.bound or s.bound == "rx":
                s.write(_pdu(SUBMIT_SM | RESP, ESME_RINVBNDSTS, seq))
                return True
            try:
                decoded = smpp34.decode(pdu)
                if not isinstance(decoded, smpp34.SubmitSm):
                    raise ValueError("not a submit_sm")
            except Exception:
                s.write(_pdu(GENERIC_NACK, ESME_RINVMSGLEN, seq))
                self.nacks_sent += 1
                return True
            self._submit(s, seq, decoded)
            return True
        s.write(_pdu(GENERIC_NACK, ESME_RINVCMDID, seq))
        self.nacks_sent += 1
        return True

    def _bind(self, s: _Session, command_id: int, seq: int, body: bytes) -> bool:
        self.bind_attempts += 1
        resp_id = command_id | RESP
        try:
            (system_id, password, _system_type), pos = _cstrings(body, 3)
            if len(body) < pos + 3:
                raise ValueError("short bind body")
        except (ValueError, UnicodeDecodeError):
            s.write(_pdu(GENERIC_NACK, ESME_RINVMSGLEN, seq))
            self.nacks_sent += 1
            return True
        if s.bound:
            s.write(_pdu(resp_id, ESME_RALYBND, seq))
            return True
        if system_id != self.system_id:
            s.write(_pdu(resp_id, ESME_RINVSYSID, seq))
            return False
        if password != self.password:
            s.write(_pdu(resp_id, self.bind_fail_status, seq))
            return False
        s.bound = {BIND_TRANSCEIVER: "trx", BIND_TRANSMITTER: "tx", BIND_RECEIVER: "rx"}[command_id]
        self.binds += 1
        s.write(_pdu(resp_id, ESME_ROK, seq, self.smsc_system_id.encode("ascii") + b"\x00"))
        if s.can_receive:
            self._spawn(self._flush_outbox())
        return True

    def _submit(self, s: _Session, seq: int, p) -> None:
        rec = Submit(
            session=s.id, seq=seq, msisdn=p.destination_addr, source=p.source_addr, service_type=p.service_type,
            esm_class=p.esm_class, data_coding=p.data_coding, short_message=bytes(p.short_message),
            tlvs={t.tag: bytes(t.value) for t in p.tlvs}, registered_delivery=p.registered_delivery,
        )
        self.submits.append(rec)
        status = ESME_ROK
        now = time.monotonic()
        while self._recent and now - self._recent[0] > 1.0:
            self._recent.popleft()
        if self._throttle_next:
            status = self._throttle_next.pop(0)
        elif self.throttle_tps is not None and len(self._recent) >= self.throttle_tps:
            status = ESME_RTHROTTLED
        elif self._fail_next:
            status = self._fail_next.pop(0)
        rec.status = status
        if status != ESME_ROK:
            s.write(_pdu(SUBMIT_SM | RESP, status, seq))
            return
        self._recent.append(now)
        rec.message_id = self._new_message_id()
        resp = _pdu(SUBMIT_SM | RESP, ESME_ROK, seq, rec.message_id.encode("ascii") + b"\x00")
        # Delivery does not depend on the response reaching the ESME: that is what makes
        # an unanswered submit "unknown" rather than "failed".
        self._accept(rec)
        if self.hold_responses:
            s.held.append(resp)
        else:
            s.write(resp)

    def _new_message_id(self) -> str:
        while True:
            mid = f"{self.rng.getrandbits(40):010x}"
            if mid not in self._msg_ids:
                self._msg_ids.add(mid)
                return mid

    def _accept(self, rec: Submit) -> None:
        parts = [rec]
        if rec.esm_class & 0x40:
            concat, _ = _udh(rec.short_message)
            if concat is not None:
                ref, total, part = concat
                key = (rec.msisdn, rec.source, ref, total)
                bucket = self._concat.setdefault(key, {})
                bucket[part] = rec
                if len(bucket) < total:
                    return
                del self._concat[key]
                parts = [bucket[i] for i in sorted(bucket)]
        self._spawn(self._route(parts))

    def _price(self, rec: Submit) -> int | None:
        if self.pricing == "short_code":
            return self.price_points.get(rec.source)
        if self.pricing == "service_type":
            return self.price_points.get(rec.service_type) if rec.service_type else None
        if self.pricing == "tlv" and self.premium_tlv_tag in rec.tlvs:
            value = rec.tlvs[self.premium_tlv_tag].rstrip(b"\x00").decode("ascii", errors="replace")
            return self.price_points.get(value)
        return None

    async def _route(self, parts: list[Submit]) -> None:
        first = parts[0]
        lo, hi = self.dlr_delay
        if hi > 0:
            await asyncio.sleep(self.rng.uniform(lo, hi))
        data = b"".join(_udh(p.short_message)[1] if p.esm_class & 0x40 else p.short_message for p in parts)
        text = _decode_text(data, first.data_coding)
        price = self._price(first)
        stat, err = "DELIVRD", "000"
        if price is not None:
            balance = self.balance(first.msisdn)
            if balance >= price:
                self.balances[first.msisdn] = balance - price
                self.ledger.append(
                    {"msisdn": first.msisdn, "amount_minor": price, "currency": self.currency,
                     "message_id": parts[-1].message_id, "short_code": first.source,
                     "service_type": first.service_type, "at": datetime.now(UTC).isoformat()}
                )
            else:
                stat, err = "UNDELIV", self.no_credit_err
        if stat == "DELIVRD":
            self.delivered.append(
                Delivered(first.msisdn, first.source, text, [p.message_id for p in parts], first.service_type, price)
            )
        for p in parts:
            if p.registered_delivery & 0x03 and self.dlr_mode != "none":
                for _ in range(2 if self.dlr_duplicates else 1):
                    self._spawn(self._push(self._receipt_pdu(p, stat, err, text), wait=False))

    def _receipt_text(self, mid: str, stat: str, err: str, text: str) -> str:
        now = datetime.now(UTC).strftime("%y%m%d%H%M")
        dlvrd = "001" if stat == "DELIVRD" else "000"
        if self.dlr_mode == "csv":
            return f"id={mid},sub=001,dlvrd={dlvrd},submit_date={now},done_date={now},stat={stat},err={err}"
        if self.dlr_mode == "reordered":
            return f"STAT:{stat.lower()} ERR:{err} ID:{mid} done date:{now}35 Submit Date:{now}12 Text:{text[:20]}"
        return (f"id:{mid} sub:001 dlvrd:{dlvrd} submit date:{now} done date:{now} "
                f"stat:{stat} err:{err} Text:{text[:20]}")

    def _receipt_pdu(self, p: Submit, stat: str, err: str, text: str):
        self.receipts_sent.append({"message_id": p.message_id, "stat": stat, "err": err, "msisdn": p.msisdn})
        tlvs = []
        body = b""
        if self.dlr_mode == "tlv":
            tlvs = [
                smpp34.Tlv(TLV_RECEIPTED_MESSAGE_ID, p.message_id.encode("ascii") + b"\x00"),
                smpp34.Tlv(TLV_MESSAGE_STATE, bytes((MESSAGE_STATE.get(stat, 7),))),
                smpp34.Tlv(TLV_NETWORK_ERROR_CODE, bytes((3,)) + int(err).to_bytes(2, "big")),
            ]
        else:
            # Receipt text is plain ASCII; sent as such, which GSM 03.38 agrees with for these characters.
            body = self._receipt_text(p.message_id, stat, err, text).encode("ascii", errors="replace")
        return smpp34.DeliverSm(source_addr=p.msisdn, destination_addr=p.source, short_message=body,
                                source_addr_ton=1, source_addr_npi=1, esm_class=0x04, tlvs=tlvs)

    def _chunk(self, text: str, dcs: int) -> list[bytes]:
        limit = 134 if dcs == 0x08 else 153
        chunks, cur = [], ""
        for ch in text:
            enc = (cur + ch).encode("utf-16-be" if dcs == 0x08 else "gsm03.38")
            if len(enc) > limit:
                chunks.append(cur)
                cur = ch
            else:
                cur += ch
        chunks.append(cur)
        return [c.encode("utf-16-be" if dcs == 0x08 else "gsm03.38") for c in chunks]

    # ---- pushing deliver_sm to the ESME ------------------------------------------------------

    def _receiver(self) -> _Session | None:
        for s in self._sessions.values():
            if s.can_receive and not s.writer.is_closing():
                return s
        return None

    async def _push(self, pdu, *, wait: bool) -> None:
        """Send a deliver_sm to a bound receiver, queueing it until one binds; retried if the session dies."""
        done = asyncio.get_running_loop().create_future() if wait else None
        self._outbox.append((pdu, done))
        await self._flush_outbox()
        if done is not None:
            await asyncio.wait_for(done, 10)

    async def _flush_outbox(self) -> None:
        while self._outbox:
            s = self._receiver()
            if s is None:
                return
            pdu, done = self._outbox.popleft()
            self._spawn(self._deliver_one(s, pdu, done))

    async def _deliver_one(self, s: _Session, pdu, done: asyncio.Future | None) -> None:
        seq = next(s.seq)
        fut = asyncio.get_running_loop().create_future()
        s.pending[seq] = fut
        s.write(self._with_seq(pdu, seq))
        try:
            status = await asyncio.wait_for(fut, 10)
        except (ConnectionError, TimeoutError):
            # Not acknowledged, so the SMSC still owns it: deliver again on the next bind.
            s.pending.pop(seq, None)
            self._outbox.append((pdu, done))
            if self._receiver() is not None:
                await self._flush_outbox()
            return
        if done is not None and not done.done():
            done.set_result(status)

    @staticmethod
    def _with_seq(pdu, seq: int) -> bytes:
        wire = bytearray(pdu.encode())
        struct.pack_into("!I", wire, 12, seq)
        return bytes(wire)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _norm(msisdn: str) -> str:
        return str(msisdn).lstrip("+")


async def _main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Run the SMPP SMSC simulator")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=2775)
    ap.add_argument("--system-id", default="carrierpay")
    ap.add_argument("--password", default="secret")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dlr-mode", choices=DLR_MODES, default="standard")
    ap.add_argument("--dlr-delay", type=float, default=0.5)
    ap.add_argument("--throttle-tps", type=float, default=None)
    args = ap.parse_args(argv)
    smsc = SmscSimulator(
        system_id=args.system_id, password=args.password, host=args.host, port=args.port, seed=args.seed,
        subscribers={"27820000001": 10_000, "27820000002": 0}, default_balance=1_000,
        price_points={"33005": 500, "33010": 1000}, dlr_mode=args.dlr_mode, dlr_delay=(0.0, args.dlr_delay),
        throttle_tps=args.throttle_tps,
    )
    async with smsc:
        print(f"SMSC simulator listening on {args.host}:{smsc.port} (system_id={args.system_id})", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main())
