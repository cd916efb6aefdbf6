"""`GET /_portal/api/me`: who the portal's bearer token names and the role assignments it
holds now (read at this request, as every route does), for the page's header."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from lab.api.azure.common import Caller, lab_of
from lab.api.portal.classes import own_group

router = APIRouter(include_in_schema=False)


@router.get("/_portal/api/me")
def me(request: Request, principal: Caller) -> dict[str, Any]:
    """Also the caller's class, as a trainee (and so the group their scenarios live in), and
    the classes they teach: the page shows a trainee their catalogue, an instructor the
    dashboard."""
    lab = lab_of(request)
    trainee_of = lab.classes.of_trainee(principal.name)
    return {"name": principal.name, "objectId": principal.object_id,
            "roleAssignments": [{"role": a.role.name, "scope": a.scope}
                                for a in principal.assignments],
            "traineeOf": trainee_of.name if trainee_of else None,
            "scenarioGroup": own_group(lab, principal),
            "instructs": [c.name for c in lab.classes.instructed_by(principal.name)]}  # fmt: skip
