"""What every Azure route shares: the caller's token, `api-version`, paths, the role check.
(Errors are rendered in `lab/api/errors.py`, for both apps.)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Query, Request

from lab.api.app_state import lab_of as lab_of  # the Azure routers import it from here
from lab.api.azure.errors import AuthorizationFailed, MissingApiVersionParameter
from lab.api.security.tokens import Principal, verify
from lab.domain.errors import NotFound


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
        raise MissingApiVersionParameter(
            "The api-version query parameter (?api-version=) is required for all requests.",
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


def require_action(principal: Principal, action: str, scope: str) -> None:
    """Refuse an action none of the caller's role assignments grants on `scope` (a resource
    id), with Azure's 403 body and wording."""
    if not principal.may(action, scope):
        raise AuthorizationFailed(
            f"The client '{principal.name}' with object id '{principal.object_id}' does not have "
            f"authorization to perform action '{action}' over scope '{scope}' or the scope is "
            "invalid. If access was recently granted, please refresh your credentials.",
        )
