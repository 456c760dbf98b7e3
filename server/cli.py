"""``realizar-ort serve [--config config.toml] [--host HOST] [--port PORT]``: run the API under uvicorn.

The models load once, in the app's lifespan, before the socket accepts requests; the startup log names
each model, the execution provider it runs on, and the address the server listens on.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

__all__ = ["add_arguments", "build_server", "run"]

log = logging.getLogger("realizar_ort.server")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=Path("config.toml"),
                        help="the config file naming the models and server settings (default: ./config.toml)")
    parser.add_argument("--host", default=None, help="interface to bind (default: [server].host)")
    parser.add_argument("--port", type=int, default=None, help="port to bind (default: [server].port; 0 = any free)")


def build_server(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The configured ``uvicorn.Server`` for ``args`` (not started)."""
    import uvicorn

    from realizar_ort.config import load_config

    from .app import create_app

    config = load_config(args.config)
    server_cfg = config.server
    if args.host is not None:
        server_cfg = dataclasses.replace(server_cfg, host=args.host)
    if args.port is not None:
        server_cfg = dataclasses.replace(server_cfg, port=args.port)
    config = dataclasses.replace(config, server=server_cfg)
    app = create_app(config)
    uv_config = uvicorn.Config(app, host=server_cfg.host, port=server_cfg.port, log_level=server_cfg.log_level,
                               access_log=server_cfg.log_level == "debug", lifespan="on", timeout_graceful_shutdown=5)

    class _Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
            await super().startup(sockets)
            if self.started:  # after the lifespan loaded the models, with the real port
                for listener in self.servers:
                    for sock in listener.sockets:
                        host, port = sock.getsockname()[:2]
                        log.info("listening on http://%s:%d (/v1/chat/completions, /v1/embeddings, /v1/models, "
                                 "/health, /ready, /metrics)", host, port)

    return _Server(uv_config)


def run(args: argparse.Namespace) -> int:
    from realizar_ort.config import ConfigError

    try:
        server = build_server(args)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    server.run()
    return 0 if server.started else 1
