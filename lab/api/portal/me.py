"""`GET /_portal/api/me`: who the portal's bearer token names and the role assignments it
holds now (read at this request, as every route does), for the page's header."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from lab.api.azure.common import Caller

router = APIRouter(include_in_schema=False)


@router.get("/_portal/api/me")
async def me(principal: Caller) -> dict[str, Any]:
    return {"name": principal.name, "objectId": principal.object_id,
            "roleAssignments": [{"role": a.role.name, "scope": a.scope}
                                for a in principal.assignments]}  # fmt: skip
