"""Run the app under uvicorn in a background thread: for tests, benchmarks and notebooks.

``LiveServer(app)`` returns once the lifespan has loaded the models and the socket listens on
``127.0.0.1`` (any free port by default); :meth:`LiveServer.stop` shuts it down gracefully;
:meth:`LiveServer.drain` drains first, as SIGTERM does.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

from .shutdown import DrainingServer

__all__ = ["LiveServer"]


class LiveServer:
    """``app`` served by uvicorn on ``host:port`` (port 0: a free one) until :meth:`stop`."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                 startup_timeout: float = 300.0) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                                timeout_graceful_shutdown=5)
        drain = getattr(getattr(getattr(app, "state", None), "realizar", None), "drain", None)
        self.server = DrainingServer(config, drain) if drain is not None else uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + startup_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not start (see the log)")
            time.sleep(0.02)
        self.port: int = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{host}:{self.port}"

    def drain(self) -> None:
        """Start a graceful shutdown, as SIGTERM does for ``realizar-ort serve`` (see .shutdown)."""
        assert isinstance(self.server, DrainingServer)
        self.server.begin_drain()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def __enter__(self) -> LiveServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
