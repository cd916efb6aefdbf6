"""What every route of both apps (the daemon's and the Azure-compatible one) reaches through
its request: the `Lab` the app serves."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from lab.services.lab import Lab


def lab_of(connection: HTTPConnection) -> Lab:
    """The lab of a request or a websocket's app."""
    lab: Lab = connection.app.state.lab
    return lab
