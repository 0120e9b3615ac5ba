"""An aiohttp application served on one address, stoppable in the three shutdown stages.

aiohttp's AppRunner.cleanup() does all three at once; they are split here so that each
stage is bounded and logged on its own: stop accepting closes the listening socket,
drain lets in-flight requests finish, close runs the application's cleanup contexts (in
the reverse order of their start: that is where resources are closed).
"""

from __future__ import annotations

from aiohttp import web


class HttpServer:
    def __init__(
        self, app: web.Application, *, host: str, port: int, drain_timeout: float = 5.0
    ) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=drain_timeout)
        self._drain_timeout = drain_timeout
        self._bound_port: int | None = None

    @property
    def app(self) -> web.Application:
        return self._app

    @property
    def port(self) -> int:
        """The bound port (useful when port 0 asked the system to choose one)."""
        if self._bound_port is None:
            raise RuntimeError("the server is not started")
        return self._bound_port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    async def setup(self) -> None:
        """Start the application: its cleanup contexts open their resources."""
        await self._runner.setup()

    async def listen(self) -> None:
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        for address in self._runner.addresses:
            self._bound_port = int(address[1])
            break

    async def start(self) -> None:
        await self.setup()
        await self.listen()

    async def stop_accepting(self) -> None:
        for site in list(self._runner.sites):
            await site.stop()

    async def drain(self) -> None:
        server = self._runner.server
        if server is None:
            return
        server.pre_shutdown()
        await self._runner.shutdown()
        await server.shutdown(self._drain_timeout)

    async def close(self) -> None:
        await self._runner.cleanup()
