"""A hostile carrier sandbox writing to the operator's terminal: what it answers is shown as text, never
run as terminal escape sequences or rich markup."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading

from aiohttp import web

HOSTILE_TEXT = "\x1b]0;owned\x07\x1b[2J[green]ok[/] all checks passed"

SPEC = """\
code: hostile_gb
name: Hostile sandbox
country: GB
mcc: "234"
mnc: "99"
currency: GBP
timezone: Europe/London
number_ranges: ["+4477001"]
regulation: GB
terms: {carrier_share_bp: 3000}
throughput: {tps: 10}
transport: http
base_url: http://127.0.0.1:9
operations:
  balance:
    pattern: sync
    safe_to_repeat: true
    request:
      method: GET
      path: "/balance/{{ msisdn | urlquote }}"
    response:
      format: json
      extract:
        code: $.error.code
        message: $.error.text
    results:
      - {when: {http_status: 200}, outcome: succeeded}
      - {when: {code: X1}, outcome: failed, reason: rejected}
"""


class HostileSandbox:
    """Answers every balance query with a refusal whose text is a terminal attack."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _start(self) -> int:
        async def balance(request: web.Request) -> web.Response:
            return web.json_response({"error": {"code": "X1", "text": HOSTILE_TEXT}}, status=400)

        app = web.Application()
        app.router.add_get("/balance/{msisdn}", balance)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]

    def __enter__(self) -> str:
        self.thread.start()
        port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_a_carrier_answer_cannot_drive_the_operators_terminal(tmp_path):
    spec = tmp_path / "hostile_gb" / "carrier.yaml"
    spec.parent.mkdir()
    spec.write_text(SPEC)
    env = {key: value for key, value in os.environ.items() if not key.startswith("CARRIERPAY_")} | {
        "COLUMNS": "80", "CARRIERPAY_HOME": str(tmp_path)}
    with HostileSandbox() as base_url:
        result = subprocess.run([sys.executable, "-m", "carrierpay", "carrier", "check", str(spec), "--base-url",
                                 base_url], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr  # the check failed, and says so
    assert "FAIL" in result.stdout
    for control in ("\x1b", "\x07"):
        assert control not in result.stdout + result.stderr
    # The carrier's words are there, as text: escaped controls and the literal markup.
    assert "\\x1b]0;owned\\x07\\x1b[2J[green]ok[/] all checks passed" in result.stdout, result.stdout
