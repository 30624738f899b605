"""Run the application with uvicorn on a socket bound here, so the real port is known at once.

`check_bind` refuses a non-loopback address without a token before anything listens; the socket
is bound and listening before the URL is printed, so a client that reads the URL and connects at
once is queued by the kernel until the server (and its worker pool) is ready.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from meddenoise.web.app import ServerSettings, create_app, is_loopback

__all__ = ["BindError", "bind_socket", "check_bind", "run_server"]

# Connections uvicorn serves at once beyond the pool's capacity (page assets, health checks,
# requests being uploaded); past it uvicorn itself answers 503.
EXTRA_CONNECTIONS = 64


class BindError(ValueError):
    """The server may not, or cannot, listen where it was asked to."""


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token.

    Raises
    ------
    BindError
        For a non-loopback `host` with no token.
    """
    if not is_loopback(host) and not token:
        raise BindError(
            f"listening on {host} lets other machines call the server: give a token "
            "(--token, or the MEDDENOISE_TOKEN environment variable), or keep 127.0.0.1"
        )


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host`:`port` (0 picks a free port)."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host.strip("[]"), port))
        listener.listen(128)
    except OSError as error:
        listener.close()
        raise BindError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return listener


def url_of(listener: socket.socket, host: str) -> str:
    """The http:// URL a client on this machine uses for `listener`."""
    port = listener.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if ":" in host.strip("[]") else host
    if shown in ("0.0.0.0", "[::]"):
        shown = "127.0.0.1" if shown == "0.0.0.0" else "[::1]"
    return f"http://{shown}:{port}"


def run_server(settings: ServerSettings, on_listening: Callable[[str], None]) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM), then end the workers and remove temp files.

    Parameters
    ----------
    settings
        Where to listen and the limits (`app.ServerSettings`).
    on_listening
        Called with the server's URL once the socket listens (before the pool is ready).

    Raises
    ------
    BindError
        Without a token on a non-loopback host, or when the address cannot be bound.
    """
    import uvicorn

    check_bind(settings.host, settings.token)
    listener = bind_socket(settings.host, settings.port)
    config = uvicorn.Config(
        create_app(settings),
        http="h11",  # one HTTP parser, whatever else is installed: the limits were tested on it
        lifespan="on",
        access_log=False,  # request lines carry nothing useful and the logs stay quiet
        log_level="warning",
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
        limit_concurrency=settings.workers + settings.queue + EXTRA_CONNECTIONS,
        h11_max_incomplete_event_size=64 * 1024,
    )
    server = uvicorn.Server(config)
    on_listening(url_of(listener, settings.host))
    try:
        server.run(sockets=[listener])
    finally:
        listener.close()
