"""Which web pages may open a console websocket: the browser's `Origin` check.

A browser sends `Origin` with every websocket handshake and lets any page open a websocket to
any address, so the server decides. The gateway accepts its own origin (the portal, served from
the same `https://host:port`) and clients that send no `Origin` (scripts, the SDKs); the Azure
CLI's extension (websocket-client) sends `https://<host>:<port>` of the connection string, which
is the server's own origin too. Anything else is refused before the handshake completes.
The daemon's own console websocket lives on a unix socket that no browser can reach; it refuses
every `Origin`, so a socket forwarded to TCP by hand does not open the consoles to web pages.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from lab.api.azure.errors import OriginNotAllowed

_DEFAULT_PORTS = {"https": 443, "http": 80, "wss": 443, "ws": 80}


def _host_port(netloc: str, scheme: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(f"//{netloc}")
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return None
    if not parts.hostname or port is None:
        return None
    return parts.hostname.lower(), port


def require_same_origin(origin: str | None, host: str | None, scheme: str, where: str) -> None:
    """Accept no `Origin`, or the server's own (`scheme://host` where the request's `Host`
    header names the host); refuse any other with a 403 that names both."""
    if origin is None:
        return
    parsed = urlsplit(origin.strip())
    own_scheme = {"wss": "https", "ws": "http"}.get(scheme, scheme)
    theirs = _host_port(parsed.netloc, parsed.scheme) if parsed.scheme == own_scheme else None
    ours = _host_port(host or "", own_scheme)
    if theirs is None or ours is None or theirs != ours:
        raise OriginNotAllowed(
            f"{where} refuses websocket connections from the web page at origin '{origin}'; "
            f"only pages served by this server ({own_scheme}://{host}) and clients that send no "
            "Origin header may connect.",
            target="Origin",
        )


def refuse_every_origin(origin: str | None, where: str) -> None:
    """For a websocket no browser should ever reach (the daemon's unix socket)."""
    if origin is not None:
        raise OriginNotAllowed(
            f"{where} does not accept websocket connections from web pages (origin "
            f"'{origin}'); use `lab console` or the Azure-compatible API's gateway.",
            target="Origin",
        )
