"""Local HTTP endpoints that stand in for the merchants' own servers in the demo (webhook and
CloudEvents receivers): an aiohttp application on a free port of 127.0.0.1."""

from __future__ import annotations

import ssl
from typing import Self

from aiohttp import web


class LoopbackServer:
    """An aiohttp application on a free port of 127.0.0.1: the demo's stand-ins for the merchants'
    own endpoints. Only the demo's daemons call them, so they need no `GuardedListener`."""

    path = ""  # what `url` ends with
    ssl_context: ssl.SSLContext | None = None
    _runner: web.AppRunner | None = None
    url = ""

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> Self:
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context).start()
        scheme = "https" if self.ssl_context else "http"
        self.url = f"{scheme}://127.0.0.1:{self._runner.addresses[0][1]}{self.path}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
