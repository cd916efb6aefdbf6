"""What every Azure route shares: the caller's token, `api-version`, paths, errors."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lab.api.app_state import lab_of as lab_of  # the Azure routers import it from here
from lab.api.security.tokens import Principal, verify
from lab.domain.errors import InvalidInput, LabError, NotFound, disk_full

REQUEST_ID = "x-ms-request-id"


# Both dependencies are async: a sync one costs a hop through the thread pool per request.
async def caller(request: Request) -> Principal:
    return verify(request.app.state.verifier, request.headers.get("authorization"))


async def api_version(
    version: Annotated[
        str | None,
        Query(
            alias="api-version",
            description="Any version is accepted and answered the same way, e.g. 2024-07-01",
        ),
    ] = None,
) -> str:
    # Declared (not read from the request by hand), so /openapi.json shows what every route
    # needs; optional there, so a missing one gets Azure's own error code, not a generic 422.
    if not version:
        raise InvalidInput(
            "The api-version query parameter (?api-version=) is required for all requests.",
            code="MissingApiVersionParameter",
            target="api-version",
        )
    return version


Caller = Annotated[Principal, Depends(caller)]
T = TypeVar("T")


def or_none(lookup: Callable[[], T]) -> T | None:
    """The resource `lookup` finds, or None where ARM's PUT creates and DELETE answers 204."""
    try:
        return lookup()
    except NotFound:
        return None


ApiVersion = Annotated[str, Depends(api_version)]


def arm_paths(suffix: str) -> list[str]:
    """ARM accepts `resourceGroups` in any case; the SDKs and the spec use both spellings."""
    return [
        f"/subscriptions/{{subscription}}/{groups}/{{group}}{suffix}"
        for groups in ("resourceGroups", "resourcegroups")
    ]


def blob_endpoint(request: Request, account: str) -> str:
    """A storage account's blob endpoint: path-style on the lab's own origin (as Azurite serves
    local storage), so one TLS certificate and one port serve every account."""
    return f"{str(request.base_url).rstrip('/')}/{account}/"


def blob_uri(request: Request, account: str, container: str, blob: str) -> str:
    return f"{blob_endpoint(request, account)}{container}/{blob}"


def error_response(exc: LabError, request_id: str) -> JSONResponse:
    return JSONResponse({"error": exc.to_dict()}, status_code=exc.status,
                        headers={REQUEST_ID: request_id})  # fmt: skip


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


def install_error_handling(app: FastAPI) -> None:
    """Azure's `{"error": {...}}` body and an `x-ms-request-id` on every response."""
    app.add_middleware(RequestIdMiddleware)

    @app.exception_handler(LabError)
    async def lab_error(request: Request, exc: LabError) -> JSONResponse:
        return error_response(exc, getattr(request.state, "request_id", str(uuid.uuid4())))

    @app.exception_handler(OSError)
    async def os_error(request: Request, exc: OSError) -> JSONResponse:
        err = disk_full(exc)
        if err is None:
            raise exc  # a bug, not bad luck: the server's 500
        return error_response(err, getattr(request.state, "request_id", str(uuid.uuid4())))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        err = InvalidInput(f"{where}: {first.get('msg', 'invalid request')}", target=where)
        return error_response(err, getattr(request.state, "request_id", str(uuid.uuid4())))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "BadRequest")
        err = LabError(str(exc.detail), code=code)
        err.status = exc.status_code  # type: ignore[misc]
        return error_response(err, getattr(request.state, "request_id", str(uuid.uuid4())))


class AuthorizationFailed(LabError):
    code = "AuthorizationFailed"
    status = 403


def require_action(principal: Principal, action: str, scope: str) -> None:
    """Refuse an action none of the caller's role assignments grants on `scope` (a resource
    id), with Azure's 403 body and wording."""
    if not principal.may(action, scope):
        raise AuthorizationFailed(
            f"The client '{principal.name}' with object id '{principal.object_id}' does not have "
            f"authorization to perform action '{action}' over scope '{scope}' or the scope is "
            "invalid. If access was recently granted, please refresh your credentials.",
        )
