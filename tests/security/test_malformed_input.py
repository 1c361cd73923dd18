"""Hostile bodies and slow clients against the callback server.

Malformed input (JSON nested 100,000 deep, NUL characters, a price of 1e400, broken chunked
encoding) is answered 400 (403 when it is not even authenticated) with one log line and no
traceback, and writes nothing. Slow clients (partial headers, a trickled body, silent connections,
more connections than allowed) are cut off: the server is configured with short limits and the
tests only check that it lets go within a generous bound, never how fast.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from carrierpay.guarded_http import HttpLimits
from tests.security.callback_kit import (
    HMAC_RAW_BODY,
    JSON_NG,
    NG,
    SERVICE_SECRETS,
    CallbackWorld,
    aggregator_spec,
    form_fields,
    hmac_header,
    http_request,
    json_body,
    json_spec,
    post_form,
    post_json,
    send_raw,
    sign_form,
)

REPO = Path(__file__).resolve().parents[2]
JSON_PATH = f"/callbacks/{JSON_NG}"
FORM_PATH = f"/callbacks/{NG}"
SHORT = HttpLimits(max_connections=4, header_timeout_s=1.0, body_timeout_s=1.0, idle_timeout_s=1.0)
BOUND_S = 10.0  # "let go within": generous, so a loaded machine cannot make these tests flaky


def deep_json(depth: int = 100_000) -> bytes:
    return b'{"reference": ' + b"[" * depth + b"]" * depth + b"}"


def malformed_requests(correlator: str) -> dict[str, tuple[bytes, int]]:
    """name -> (raw request, the status it must get)."""
    deep = deep_json()
    nul_json = json_body(correlator).replace(b'"NG-TX-2"', b'"NG\\u0000TX"')
    huge_json = json_body(correlator).replace(b'"100.00"', b"1e400")
    huge_text_json = json_body(correlator).replace(b'"100.00"', b'"1e400"')
    endless_json = json_body(correlator).replace(b'"100.00"', b'"1e999999999"')
    nan_json = json_body(correlator).replace(b'"100.00"', b"NaN")
    return {
        "unsigned deep JSON": (post_json(JSON_PATH, deep), 403),
        "signed deep JSON": (post_json(JSON_PATH, deep, hmac_header(deep)), 400),
        "signed JSON with a NUL": (post_json(JSON_PATH, nul_json, hmac_header(nul_json)), 400),
        "signed JSON priced 1e400": (post_json(JSON_PATH, huge_json, hmac_header(huge_json)), 400),
        "signed JSON priced '1e400'": (post_json(JSON_PATH, huge_text_json, hmac_header(huge_text_json)), 400),
        "signed JSON priced '1e999999999'": (post_json(JSON_PATH, endless_json, hmac_header(endless_json)), 400),
        "signed JSON priced NaN": (post_json(JSON_PATH, nan_json, hmac_header(nan_json)), 400),
        "signed JSON that is not JSON": (post_json(JSON_PATH, b"\xff{", hmac_header(b"\xff{")), 400),
        "signed JSON with an object for a field": (
            post_json(JSON_PATH, b := json_body(correlator).replace(b'"ok"', b'{"a": [1]}'), hmac_header(b)), 400),
        "unsigned form with a NUL": (post_form(FORM_PATH, {"reference": correlator, "status": "ok\x00"}), 403),
        "signed form with a NUL": (post_form(FORM_PATH, sign_form({**form_fields(correlator),
                                                                    "message_id": "NG\x00TX"})), 400),
        "signed form priced 1e400": (post_form(FORM_PATH, form_fields(correlator, price="1e400")), 400),
        "signed form priced -1": (post_form(FORM_PATH, form_fields(correlator, price="-1.00")), 400),
        "form in another encoding": (http_request("POST", FORM_PATH, b"reference=\xff\xfe&sig=00"), 400),
        "form with too many fields": (http_request("POST", FORM_PATH, b"&".join(b"f%d=1" % i for i in range(5000))),
                                      400),
        "broken chunked body": (
            f"POST {FORM_PATH} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n\r\nzz\r\nreference=x\r\n0\r\n\r\n".encode(), 400),
        "carrier name with a NUL": (post_form("/callbacks/aggregator%00ng", form_fields(correlator)), 404),
    }


async def test_malformed_callbacks_get_400_and_one_log_line(db_url, caplog):
    caplog.set_level(logging.INFO)
    async with CallbackWorld(db_url, specs=[aggregator_spec(), json_spec(JSON_NG, HMAC_RAW_BODY)]) as world:
        _, json_correlator = await world.charge(JSON_NG, 1)
        payment, form_correlator = await world.charge(NG, 1)
        await world.send(JSON_NG)
        await world.send(NG)
        requests = malformed_requests(json_correlator)
        requests.update({name: req for name, req in malformed_requests(form_correlator).items() if "form" in name})
        for name, (request, expected) in requests.items():
            caplog.clear()
            status, answer = await send_raw(world.port, request)
            assert status == expected, (name, answer[:300])
            problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
            assert len(problems) == 1, (name, [r.getMessage() for r in problems])
            assert not any(r.exc_info for r in caplog.records), name
            assert "Traceback" not in caplog.text, name
            assert b"Traceback" not in answer, name
        assert await world.one("select count(*) from cp.callback_inbox") == 0
        assert await world.one("select count(*) from cp.procedure where status = 'succeeded'") == 0
        # Still serving, and a genuine callback still lands.
        status, _ = await send_raw(world.port, post_form(FORM_PATH, form_fields(form_correlator)))
        assert status == 200
        assert (await world.state(payment))["payment"] == "succeeded"


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the server closes the connection within `seconds` (whatever it sends first)."""
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            chunk = await asyncio.wait_for(reader.read(65536), max(0.01, deadline - time.monotonic()))
            if not chunk:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


async def trickle(writer: asyncio.StreamWriter, chunks: list[bytes], stop: asyncio.Event) -> None:
    try:
        for chunk in chunks:
            if stop.is_set():
                return
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.2)
    except (ConnectionError, OSError):
        return


async def test_slow_clients_are_cut_off(db_url):
    async with CallbackWorld(db_url, limits=SHORT) as world:
        port = world.port
        header = f"POST {FORM_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
        cases = {
            # the request line and one header, then nothing more
            "partial headers": [header],
            # one more header line every 0.2 s, for ever (as far as the server can tell)
            "trickled headers": [header] + [f"X-Pad-{i}: {i}\r\n".encode() for i in range(200)],
            # complete headers announcing a body that arrives a byte at a time
            "trickled body": [header + b"Content-Type: application/x-www-form-urlencoded\r\n"
                              b"Content-Length: 100000\r\n\r\n"] + [b"a"] * 200,
            # connects and says nothing
            "silent": [],
        }
        for name, chunks in cases.items():
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            stop = asyncio.Event()
            sender = asyncio.ensure_future(trickle(writer, chunks, stop))
            try:
                assert await closed_within(reader, BOUND_S), f"{name}: the server held the connection"
            finally:
                stop.set()
                await sender
                writer.close()
        assert world.server.listener.counts["timed_out"] >= len(cases)
        status, _ = await send_raw(port, http_request("GET", "/health"))
        assert status == 200


async def test_connections_beyond_the_limit_are_closed_at_once(db_url):
    async with CallbackWorld(db_url, limits=HttpLimits(max_connections=3, header_timeout_s=30, idle_timeout_s=30,
                                                       body_timeout_s=30)) as world:
        held = [await asyncio.open_connection("127.0.0.1", world.port) for _ in range(3)]
        await asyncio.sleep(0.2)  # let the server accept them
        reader, writer = await asyncio.open_connection("127.0.0.1", world.port)
        writer.write(http_request("GET", "/health"))
        assert await closed_within(reader, BOUND_S)
        writer.close()
        assert world.server.listener.counts["refused"] >= 1
        for _, held_writer in held:
            held_writer.close()
        for _ in range(100):  # the server notices the closed connections
            if not world.server.listener.open:
                break
            await asyncio.sleep(0.05)
        status, _ = await send_raw(world.port, http_request("GET", "/health"))
        assert status == 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("partial", [b"GET /health HTTP/1.1\r\nHost: x\r\n", b""], ids=["partial header", "silent"])
async def test_the_serve_command_applies_its_header_timeout(db_url, tmp_path, partial):
    port = free_port()
    log_path = tmp_path / "callbacks.log"
    with log_path.open("wb") as log:
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "carrierpay", "callbacks", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--header-timeout", "1", "--database-url", db_url,
            env={**os.environ, **SERVICE_SECRETS, "PYTHONPATH": str(REPO)}, stdout=log, stderr=log, cwd=str(REPO))
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    status, _ = await send_raw(port, http_request("GET", "/health"))
                    if status == 200:
                        break
                except OSError:
                    pass
                assert server.returncode is None and time.monotonic() < deadline, log_path.read_text()
                await asyncio.sleep(0.1)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(partial)
            assert await closed_within(reader, BOUND_S), "the server held a partial request"
            writer.close()
        finally:
            server.terminate()
            await asyncio.wait_for(server.wait(), 15)
    assert "Traceback" not in log_path.read_text()
