"""The bridge between the adapter daemon and an SMPP carrier.

`smpp_connector_for(code, spec, database_url)` is a connector factory for
`carrierpay.adapters.daemon.AdapterDaemon` (and the transport registry): it starts one
`SmppConnector` for the carrier and returns an object whose `execute(call)` submits a claimed carrier
call (`send_sms`, or `charge` as a premium MT) and returns the connector's result unchanged, for
`adapter.complete_calls`. What the SMSC sends back on its own is written to the database at once:

- MO messages → `adapter.record_mo(carrier, mo)` (keywords, YES, STOP, HELP; duplicates dropped there);
- delivery receipts → `adapter.record_callback(carrier, {carrier_ref, outcome, reason, dedupe_key, ...})`.
  A receipt that is not final (ACCEPTD, ENROUTE) is recorded with outcome `pending`, which settles
  nothing. A receipt for an id the database does not know yet stays in `cp.callback_inbox` and is
  applied when the call learns that id.

The connector acknowledges a deliver_sm only after the callback returns, so the writes retry (with a
fresh connection) while the database is unreachable, holding the SMSC back rather than losing the
message. The bridge holds no state of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from carrierpay import queries

from .config import load_smpp_config
from .connector import SmppConnector

log = logging.getLogger("carrierpay.smpp.bridge")

# What SmppConnector.send reads from a call document (cp.call_document); the rest stays behind.
CALL_FIELDS = ("call_id", "operation", "correlator", "msisdn", "text", "amount_minor", "currency", "short_code")
RETRYABLE = (psycopg.OperationalError, psycopg.InterfaceError, psycopg.errors.DeadlockDetected,
             psycopg.errors.SerializationFailure)


def call_for_smpp(call: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a call document the SMPP connector needs."""
    return {key: call[key] for key in CALL_FIELDS if call.get(key) is not None}


def receipt_payload(receipt: Mapping[str, Any]) -> dict[str, Any]:
    """A delivery receipt as adapter.record_callback takes it."""
    ref = receipt.get("carrier_ref")
    final = receipt.get("final", True)
    stat, err = receipt.get("stat"), receipt.get("err")
    payload = {
        "carrier_ref": ref,
        "outcome": receipt.get("outcome") if final else "pending",
        "reason": receipt.get("reason"),
        "carrier_code": err,
        "stat": stat,
        "err": err,
        "final": final,
        "msisdn": receipt.get("msisdn"),
        "short_code": receipt.get("short_code"),
        "received_at": receipt.get("received_at"),
        # The same receipt delivered twice has the same key; a later state of the same message does not.
        "dedupe_key": f"dlr:{ref}:{stat}:{err}",
    }
    return {k: v for k, v in payload.items() if v is not None}


class SmppBridge:
    """One carrier's SMPP connector with its inbound traffic written to the database."""

    def __init__(self, code: str, spec: Mapping[str, Any], database_url: str, *,
                 secrets: Mapping[str, str] | None = None, write_attempts: int = 30, write_backoff_s: float = 0.2):
        self.code = code
        self.database_url = database_url
        self.write_attempts = write_attempts
        self.write_backoff_s = write_backoff_s
        config = load_smpp_config(spec["smpp"], throughput_tps=(spec.get("throughput") or {}).get("tps"))
        self.connector = SmppConnector(config, secrets, on_mo=self.record_mo, on_receipt=self.record_receipt,
                                       carrier_code=code)
        self._conn: psycopg.AsyncConnection | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> SmppBridge:
        await self._connect()
        await self.connector.start()
        return self

    async def close(self) -> None:
        await self.connector.stop()
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def execute(self, call: Mapping[str, Any]) -> dict[str, Any]:
        """Submit one claimed call; the result goes to adapter.complete_calls as it is."""
        return await self.connector.send(call_for_smpp(call))

    async def record_mo(self, mo: dict) -> dict:
        return await self._write(queries.RECORD_MO, {"carrier": self.code, "mo": Jsonb(mo)})

    async def record_receipt(self, receipt: dict) -> dict:
        payload = Jsonb(receipt_payload(receipt))
        return await self._write(queries.RECORD_CALLBACK, {"carrier": self.code, "payload": payload})

    async def _connect(self) -> psycopg.AsyncConnection:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(self.database_url, autocommit=True)
        return self._conn

    async def _write(self, query: str, params: dict) -> dict:
        async with self._lock:
            for attempt in range(1, self.write_attempts + 1):
                try:
                    conn = await self._connect()
                    cur = await conn.execute(query, params)
                    return (await cur.fetchone())[0]
                except RETRYABLE as exc:
                    if attempt == self.write_attempts:
                        raise
                    log.warning("%s: recording an SMSC message failed (%s); retrying", self.code, str(exc).strip())
                    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)) and self._conn is not None:
                        await self._conn.close()
                        self._conn = None
                    await asyncio.sleep(min(self.write_backoff_s * attempt, 2.0))
        raise AssertionError("unreachable")


async def smpp_connector_for(code: str, spec: Mapping[str, Any], database_url: str, *,
                             secrets: Mapping[str, str] | None = None) -> SmppBridge:
    """Connector factory for carriers whose spec says `transport: smpp`: binds to the SMSC and returns
    an object with `async execute(call)` (and `close()`, which the adapter daemon calls on exit)."""
    return await SmppBridge(code, spec, database_url, secrets=secrets).start()
