"""The HTTP server of ``chronos serve``: the API app under uvicorn on a bound socket, with the back end
(projections, workers, periodic syncs) the app's lifespan runs. The CLI module only parses arguments;
composing the API and the server lives here, so ``app/commands`` never imports ``app/api``."""

from __future__ import annotations

import dataclasses
import secrets
import socket
from collections.abc import Callable

from app.config import Settings


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    worker_slots: int = 0
    run_projections: bool = True
    log_level: str = "warning"


def serve(settings: Settings, options: ServeOptions, say: Callable[[str], None] = print) -> int:
    """Run until stopped (SIGINT/SIGTERM); 0 after a clean stop, 1 when the server never started.
    Without ``CHRONOS_API_TOKENS`` a random token is made for this run and shown with a dashboard link."""
    import uvicorn

    from app.api import create_app
    from app.api.server import ChronosServer

    generated = None
    if not settings.api_tokens:
        generated = secrets.token_urlsafe(24)
        settings = dataclasses.replace(settings, api_tokens=(generated,))
    app = create_app(settings, worker_slots=options.worker_slots, run_projections=options.run_projections)
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        log_level=options.log_level,
        timeout_graceful_shutdown=5,
        h11_max_incomplete_event_size=settings.max_header_bytes,
        server_header=False,
    )
    server = ChronosServer(config)
    sock = bind(options.host, options.port)
    host, port = sock.getsockname()[:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown}:{port}/"
    say(f"chronos serve: listening on {url} (worker slots: {options.worker_slots})")
    if generated:
        say(f"chronos serve: CHRONOS_API_TOKENS is unset; this run's token is {generated}")
        say(f"chronos serve: dashboard {url}#token={generated}")
    from app.services.running_serve import announce

    with announce(settings, url):  # chronos search asks this process instead of loading the model
        server.run(sockets=[sock])
    return 0 if server.started else 1


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto says TCP
    # (base_events._set_nodelay), and with Nagle on every response after a connection's first waits
    # for the client's delayed ACK: +40 ms per keep-alive request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock
