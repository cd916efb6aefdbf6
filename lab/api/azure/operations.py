"""Long-running operations as the Azure SDK pollers expect them.

An action answers 202 with `Azure-AsyncOperation` (polled for `{"status": ...}`), `Location`
(202 until done, then 200) and `Retry-After`. The work runs as a task on the server's event loop.
Operations live in memory: a restarted daemon forgets them (the VMs are unaffected).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from lab.api.azure.common import ApiVersion, Caller, require_action
from lab.api.security.tokens import Principal
from lab.domain.errors import LabError, NotFound, as_lab_error

router = APIRouter()
log = logging.getLogger(__name__)
RETRY_AFTER_S = 1


#: Reading an operation's status (Azure's action for the location-based operation routes).
OPERATION_READ = "Microsoft.Compute/locations/operations/read"


@dataclass
class Operation:
    id: str
    #: The path of the request that started it (the resource, or its action): polling needs
    #: OPERATION_READ over it, so a caller sees only the operations of what it may read.
    scope: str = "/"
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    ended: str | None = None
    error: LabError | None = None
    task: asyncio.Task[Any] | None = None
    #: What the operation answers with, when it answers with something (a Run Command's
    #: output): the status carries it as `properties.output`, the result as its body.
    result: Any = None

    @property
    def status(self) -> str:
        if self.task is None or not self.task.done():
            return "InProgress"
        return "Failed" if self.error else "Succeeded"


def start_operation(
    request: Request, location: str, work: Awaitable[Any], *, status: int = 202,
    body: dict[str, Any] | None = None, returns: bool = False,
) -> Response:  # fmt: skip
    """Run `work` in the background; answer `status` (202, or 201 with `body` for a PUT that
    creates) with the headers the SDK pollers follow. With `returns`, what `work` returns is
    the operation's result (a JSON-able value)."""
    ops: dict[str, Operation] = request.app.state.operations
    op = Operation(str(uuid.uuid4()), scope=request.url.path)

    async def run() -> None:
        try:
            result = await work
            if returns:
                op.result = result
        except Exception as exc:  # a bug must fail the operation, not pass for success
            op.error = as_lab_error(exc)
            if op.error is None:
                log.exception("operation %s failed", op.id)
                what = str(exc) if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
                op.error = LabError(f"The operation failed: {what}")
        finally:
            op.ended = datetime.now(UTC).isoformat()

    op.task = asyncio.create_task(run())
    ops[op.id] = op
    base = str(request.base_url).rstrip("/")
    sub = request.path_params["subscription"]
    version = quote(request.query_params.get("api-version", ""), safe="")
    # Quoted: header values are Latin-1, and a path segment must stay one segment.
    prefix = (f"{base}/subscriptions/{quote(sub, safe='')}/providers/Microsoft.Compute/"
              f"locations/{quote(location, safe='')}")  # fmt: skip
    headers = {
        "Azure-AsyncOperation": f"{prefix}/operations/{op.id}?api-version={version}",
        "Location": f"{prefix}/operationResults/{op.id}?api-version={version}",
        "Retry-After": str(RETRY_AFTER_S),
    }
    if body is not None:
        return JSONResponse(body, status_code=status, headers=headers)
    return Response(status_code=status, headers=headers)


def _operation(request: Request, operation_id: str, principal: Principal) -> Operation:
    """The operation, if the caller may read it. Its id is a random UUID, so answering 404
    before the authorization check tells an outsider nothing."""
    op = request.app.state.operations.get(operation_id)
    if op is None:
        raise NotFound(f"The operation '{operation_id}' was not found.", target=operation_id)
    assert isinstance(op, Operation)
    require_action(principal, OPERATION_READ, op.scope)
    return op


_OPS = "/subscriptions/{subscription}/providers/Microsoft.Compute/locations/{location}"


@router.get(_OPS + "/operations/{operation_id}")
def operation_status(
    request: Request, response: Response, subscription: str, location: str, operation_id: str,
    _v: ApiVersion, principal: Caller,
) -> dict[str, Any]:  # fmt: skip
    op = _operation(request, operation_id, principal)
    if op.status == "InProgress":
        # Without it the SDK's poller waits its own default, 30 s, for an operation that takes
        # a second (`begin_restart(...).result()` took 30.03 s, three times in a row).
        response.headers["Retry-After"] = str(RETRY_AFTER_S)
    body: dict[str, Any] = {"name": op.id, "status": op.status, "startTime": op.started}
    if op.ended:
        body["endTime"] = op.ended
    if op.error:
        body["error"] = {"code": op.error.code, "message": op.error.message}
    if op.result is not None:
        body["properties"] = {"output": op.result}
    return body


@router.get(_OPS + "/operationResults/{operation_id}")
def operation_result(
    request: Request, subscription: str, location: str, operation_id: str, _v: ApiVersion,
    principal: Caller,
) -> Response:  # fmt: skip
    op = _operation(request, operation_id, principal)
    if op.status == "InProgress":
        return Response(status_code=202, headers={"Retry-After": str(RETRY_AFTER_S)})
    if op.error:
        return JSONResponse({"error": op.error.to_dict()}, status_code=op.error.status)
    if op.result is not None:
        return JSONResponse(op.result)
    return Response(status_code=200)
