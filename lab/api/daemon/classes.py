"""Routes of the daemon API for classes (`lab class ...`) and the admission queue. Thin:
parse, call the service, serialise. A class's sign-in sheet (its made passwords) leaves once,
in the answer to its creation."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from lab.api.app_state import lab_of
from lab.domain.classroom import Classroom, RosterEntry, numbered_trainees

router = APIRouter(prefix="/v1")


class ClassBody(BaseModel):
    name: str
    #: `--trainees N`: `<name>-01` ... (ignored when a roster is given).
    trainees: int | None = Field(None, ge=1)
    roster: list[RosterEntry] | None = None
    #: Instructors to add beside the roster's (usernames; made when new).
    instructors: list[str] = []


def class_json(c: Classroom) -> dict[str, Any]:
    return {"name": c.name, "createdAt": c.created_at, "trainees": list(c.trainees),
            "instructors": list(c.instructors)}  # fmt: skip


@router.post("/classes")
async def create_class(request: Request, body: ClassBody) -> dict[str, Any]:
    roster = list(body.roster or numbered_trainees(body.name, body.trainees or 0))
    roster += [RosterEntry(username=u, role="instructor") for u in body.instructors]
    # scrypt hashes every new password (~50 ms each): off the event loop.
    made, sheet = await asyncio.to_thread(lab_of(request).classes.create, body.name, roster)
    return {**class_json(made), "sheet": sheet}


@router.get("/classes")
def list_classes(request: Request) -> list[dict[str, Any]]:
    return [class_json(c) for c in lab_of(request).classes.classes()]


@router.get("/classes/{name}")
def show_class(request: Request, name: str) -> dict[str, Any]:
    lab = lab_of(request)
    return {**class_json(lab.classes.get(name)), "results": lab.classes.results(name)}


@router.delete("/classes/{name}")
async def remove_class(request: Request, name: str) -> dict[str, Any]:
    return await lab_of(request).classes.remove(name)


@router.get("/admission")
def admission(request: Request) -> dict[str, Any]:
    return lab_of(request).admission.status()
