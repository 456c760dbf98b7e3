"""``realizar-ort serve [--config config.toml] [--host HOST] [--port PORT] [--ray]``: run the API under uvicorn,
or (``--ray``) as Ray Serve replicas behind Serve's proxy (:mod:`.ray_serve`).

The models load once, in the app's lifespan, before the socket accepts requests; the startup log names
each model, the execution provider it runs on, and the address the server listens on.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

__all__ = ["add_arguments", "build_server", "load_server_config", "run"]

log = logging.getLogger("realizar_ort.server")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=Path("config.toml"),
                        help="the config file naming the models and server settings (default: ./config.toml)")
    parser.add_argument("--host", default=None, help="interface to bind (default: [server].host)")
    parser.add_argument("--port", type=int, default=None, help="port to bind (default: [server].port; 0 = any free)")
    parser.add_argument("--ray", action="store_true",
                        help="serve as Ray Serve replicas sized by [server.ray] (needs the `ray` extra)")
    parser.add_argument("--ray-address", default=None,
                        help="--ray: the Ray cluster to join (default: $RAY_ADDRESS, else start a local Ray)")


def load_server_config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The config file named by ``args`` with ``--host``/``--port`` applied."""
    from realizar_ort.config import load_config

    config = load_config(args.config)
    server_cfg = config.server
    if args.host is not None:
        server_cfg = dataclasses.replace(server_cfg, host=args.host)
    if args.port is not None:
        server_cfg = dataclasses.replace(server_cfg, port=args.port)
    return dataclasses.replace(config, server=server_cfg)


def build_server(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The configured ``uvicorn.Server`` for ``args`` (not started)."""
    import uvicorn

    from .app import create_app
    from .shutdown import DrainingServer

    config = load_server_config(args)
    server_cfg = config.server
    app = create_app(config)
    uv_config = uvicorn.Config(app, host=server_cfg.host, port=server_cfg.port, log_level=server_cfg.log_level,
                               access_log=server_cfg.log_level == "debug", lifespan="on", timeout_graceful_shutdown=5)

    class _Server(DrainingServer):
        async def startup(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
            await super().startup(sockets)
            if self.started:  # after the lifespan loaded the models, with the real port
                for listener in self.servers:
                    for sock in listener.sockets:
                        host, port = sock.getsockname()[:2]
                        log.info("listening on http://%s:%d (/v1/chat/completions, /v1/embeddings, /v1/models, "
                                 "/health, /ready, /metrics)", host, port)

    return _Server(uv_config, app.state.realizar.drain)


def run(args: argparse.Namespace) -> int:
    from realizar_ort.config import ConfigError

    if getattr(args, "ray", False):
        try:
            config = load_server_config(args)
        except ConfigError as exc:
            log.error("%s", exc)
            return 2
        try:
            from . import ray_serve
        except ImportError as exc:
            log.error("--ray needs Ray Serve: pip install 'realizar-ort[ray]' (%s)", exc)
            return 2
        return ray_serve.run(args, config)
    try:
        server = build_server(args)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    server.run()
    return 0 if server.started else 1
