"""The lab's errors on the wire, rendered once for both apps (the daemon's and the
Azure-compatible one), as moto renders its exceptions once per provider.

Routes and services raise `LabError`s (one class per Azure code: `lab/domain/errors.py`,
`lab/api/azure/errors.py`); what they become here:

- an HTTP answer: Azure's `{"error": {"code", "message", "target", "details"}}` with the error's
  status. The one thing the two apps' bodies differ in is the daemon's `exitCode`, the exit
  code `lab` leaves with (a damaged state file: 6, whatever the status). Both apps put an
  `x-ms-request-id` on every response, errors included (`RequestIdMiddleware`);
- a refused websocket: before `accept`, an HTTP denial with that body (`deny`); after it, a
  close whose code is 4000 + the status (4401, 4403, 4404, ...) and whose reason is the
  error's code (`websocket_close`).

Azure Storage's data plane answers in XML (`lab/api/azure/storage.py`), and the device-code
authority in OAuth's shape: those are other protocols, not other renderings of this one.
"""

from __future__ import annotations

import uuid
from typing import NamedTuple

from fastapi import FastAPI, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lab.api.azure.errors import BadRequest, MethodNotAllowed, PathNotFound
from lab.domain.errors import InvalidInput, LabError, as_lab_error

REQUEST_ID = "x-ms-request-id"


def error_body(exc: LabError, *, exit_code: bool = False) -> dict[str, object]:
    """Azure's error body; with `exit_code`, the daemon's (plus the CLI's exit code for it)."""
    error = exc.to_dict()
    if exit_code:
        error["exitCode"] = exc.exit_code
    return {"error": error}


def render(exc: LabError, *, exit_code: bool = False) -> JSONResponse:
    """The HTTP answer for a LabError (the request id is the middleware's to add)."""
    return JSONResponse(error_body(exc, exit_code=exit_code), status_code=exc.status)


def validation_error(exc: RequestValidationError) -> InvalidInput:
    """FastAPI's 422 detail list as the lab's 400 (exit code 2 in the CLI): the first problem,
    located by where it is (`query.replay`, or a body field by its own path)."""
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    return InvalidInput(f"{where}: {first.get('msg', 'invalid request')}", target=where)


def http_error(exc: StarletteHTTPException) -> LabError:
    """What the router refused before any route ran (no such path, wrong method)."""
    if exc.status_code == PathNotFound.status:
        return PathNotFound(str(exc.detail))
    if exc.status_code == MethodNotAllowed.status:
        return MethodNotAllowed(str(exc.detail))
    return BadRequest(str(exc.detail), status=exc.status_code)


class RequestIdMiddleware:
    """An `x-ms-request-id` on every HTTP response (`request.state.request_id` has it).
    Plain ASGI: Starlette's `@app.middleware("http")` costs a quarter of a millisecond."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = str(uuid.uuid4())
        scope.setdefault("state", {})["request_id"] = rid
        if scope["path"].startswith("//"):
            # A client that joins an endpoint typed with a trailing '/' and a path ('https://
            # 127.0.0.1:8443/' + '/metadata/endpoints', as `az cloud register` does) sends '//'.
            scope["path"] = "/" + scope["path"].lstrip("/")
            scope["raw_path"] = scope["path"].encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID] = rid
            await send(message)

        await self.app(scope, receive, send_with_id)


def install_error_handlers(app: FastAPI, *, exit_code: bool) -> None:
    """Render every LabError (and a full disk, a malformed request, a path or method the router
    does not know) once, in the app's body shape; an `x-ms-request-id` on every response.
    `exit_code`: the daemon's bodies carry the CLI's exit code."""
    app.add_middleware(RequestIdMiddleware)

    @app.exception_handler(LabError)
    @app.exception_handler(OSError)
    async def lab_error(_request: Request, exc: Exception) -> JSONResponse:
        err = as_lab_error(exc)
        if err is None:
            raise exc  # an OSError other than a full disk is a bug, not bad luck: the 500
        return render(err, exit_code=exit_code)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return render(validation_error(exc), exit_code=exit_code)

    @app.exception_handler(StarletteHTTPException)
    async def refused(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return render(http_error(exc), exit_code=exit_code)


class WebSocketClose(NamedTuple):
    code: int
    reason: str


def websocket_close(exc: LabError) -> WebSocketClose:
    """How a websocket refused for `exc` is closed: 4000 + its HTTP status (the private range
    4000-4999, so a client reads 4401 as 401, 4404 as 404) and its code as the reason."""
    return WebSocketClose(4000 + exc.status, exc.code[:120])


async def deny(ws: WebSocket, exc: LabError) -> None:
    """Refuse a websocket handshake with an HTTP error in Azure's body (before `accept`), so a
    refused client never holds an open connection, even for a moment."""
    if "websocket.http.response" in ws.scope.get("extensions", {}):
        await ws.send_denial_response(render(exc))
    else:  # a server without the denial-response extension answers a bare 403
        await ws.close(*websocket_close(exc))
