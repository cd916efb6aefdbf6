"""A sliver of Microsoft Graph, at `https://<lab>/graph/` (the metadata's
`microsoftGraphResourceId`): what the Azure CLI asks of Graph while it works with RBAC, so
`az role assignment list` can name each assignment's principal. Tokens for it are Graph's
own (audience `https://<lab>/graph/`); a management token is refused here, as in Azure.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from lab.api.azure.authority import graph_resource
from lab.api.azure.common import lab_of
from lab.api.azure.errors import RequestResourceNotFound
from lab.api.security.tokens import Principal as Caller
from lab.api.security.tokens import verify
from lab.domain.identity import Principal

router = APIRouter(prefix="/graph/v1.0", tags=["graph"])


def directory_object(p: Principal) -> dict[str, Any]:
    if p.type == "User":
        return {"@odata.type": "#microsoft.graph.user", "id": p.object_id,
                "displayName": p.name, "userPrincipalName": p.name, "mail": None}  # fmt: skip
    return {"@odata.type": "#microsoft.graph.servicePrincipal", "id": p.object_id,
            "appId": p.app_id, "displayName": p.name,
            "servicePrincipalNames": [p.app_id], "servicePrincipalType": "Application"}  # fmt: skip


async def _caller(request: Request) -> Caller:
    """A dependency, so a missing token is a 401 before the body is looked at."""
    return verify(request.app.state.verifier, request.headers.get("authorization"),
                  audiences=(graph_resource(request),))  # fmt: skip


class IdsBody(BaseModel):
    ids: list[str]
    types: list[str] = []


GraphCaller = Annotated[Caller, Depends(_caller)]


@router.post("/directoryObjects/getByIds")
async def get_by_ids(request: Request, body: IdsBody, _who: GraphCaller) -> dict[str, Any]:
    identity = lab_of(request).identity
    found = [identity.get(i) for i in body.ids]
    return {"value": [directory_object(p) for p in found if p is not None]}


@router.get("/me")
async def me(request: Request, who: GraphCaller) -> dict[str, Any]:
    principal = lab_of(request).identity.get(who.object_id)
    if principal is None or principal.type != "User":
        raise RequestResourceNotFound("/me is the signed-in user's; a service principal has none")
    return directory_object(principal)
