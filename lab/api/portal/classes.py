"""The instructor's side of the portal: the classes they teach, a live table of their trainees'
attempts (pushed as server-sent events when an attempt changes, never polled per trainee), the
results as CSV and JSON, and any trainee's console, read-only, with replay.

Who may: the class's instructors, and the lab's owner (whoever may write role assignments on
the lab's subscription, who could make themselves an instructor anyway). Azure has no such
role, so the check is the class record, made here in one place (`instructs`, `_require`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import PlainTextResponse, StreamingResponse

from lab.api.azure.common import Caller, lab_of
from lab.api.azure.errors import AuthorizationFailed
from lab.api.azure.gateway import accept_with_token, utf8_framing
from lab.api.azure.serialconsole import CONNECT_ACTION
from lab.api.console_ws import refuse, serve_console
from lab.api.security.tokens import Principal
from lab.console.broker import SessionMode
from lab.domain.classroom import Classroom, results_csv, scenario_vm_id, trainee_group
from lab.domain.errors import LabError, VmNotRunning
from lab.domain.labfile import DEFAULT_SUBSCRIPTION_ID
from lab.services.lab import Lab
from lab.services.scenarios import GROUP

router = APIRouter(prefix="/_portal/api", include_in_schema=False)
#: The lab owner's mark: may assign roles on the lab's subscription.
OWNER_ACTION = "Microsoft.Authorization/roleAssignments/write"
#: The live table is computed again at least this often (VM states change without an
#: attempt changing: a boot ends), and a comment line keeps idle proxies from closing it.
REFRESH_S = 2.0
KEEPALIVE_S = 15.0


def _owner(principal: Principal) -> bool:
    return principal.may(OWNER_ACTION, f"/subscriptions/{DEFAULT_SUBSCRIPTION_ID}")


def own_group(lab: Lab, principal: Principal) -> str:
    """Where the caller's scenario VMs live: a trainee's own group, else `scenarios`."""
    classroom = lab.classes.of_trainee(principal.name)
    return trainee_group(principal.name) if classroom else GROUP


def instructs(lab: Lab, principal: Principal, group: str) -> bool:
    """Whether the caller teaches the trainee whose group `group` is (or owns the lab)."""
    if _owner(principal):
        return True
    return any(trainee_group(t) == group.lower() for c in lab.classes.instructed_by(
        principal.name) for t in c.trainees)  # fmt: skip


def _require(lab: Lab, principal: Principal, name: str) -> Classroom:
    """The class, if the caller teaches it (or owns the lab); else Azure's 403, whether or not
    the class exists, so the answer tells a stranger nothing."""
    if _owner(principal) or any(c.name == name for c in lab.classes.instructed_by(
            principal.name)):  # fmt: skip
        return lab.classes.get(name)
    raise AuthorizationFailed(
        f"The client '{principal.name}' with object id '{principal.object_id}' is not an "
        f"instructor of class '{name}', and does not have authorization to perform action "
        f"'{OWNER_ACTION}' over scope '/subscriptions/{DEFAULT_SUBSCRIPTION_ID}' (the lab's "
        "owner's).", target=name)  # fmt: skip


def _table(lab: Lab, classroom: Classroom) -> dict[str, Any]:
    return {"class": classroom.name, "trainees": list(classroom.trainees),
            "instructors": list(classroom.instructors),
            "rows": lab.classes.results(classroom.name), "now": time.time()}  # fmt: skip


@router.get("/classes")
def list_classes(request: Request, principal: Caller) -> dict[str, Any]:
    """The classes the caller teaches (all of them, for the lab's owner)."""
    lab = lab_of(request)
    mine = lab.classes.classes() if _owner(principal) else lab.classes.instructed_by(
        principal.name)  # fmt: skip
    return {"value": [{"name": c.name, "trainees": len(c.trainees)} for c in mine]}


@router.get("/classes/{name}")
def get_class(request: Request, name: str, principal: Caller) -> dict[str, Any]:
    lab = lab_of(request)
    return _table(lab, _require(lab, principal, name))


@router.delete("/classes/{name}")
async def end_class(request: Request, name: str, principal: Caller) -> dict[str, Any]:
    """End the class (an instructor may): as `lab class rm`, its VMs, disks and users go, and
    the results are kept in a file."""
    lab = lab_of(request)
    await asyncio.to_thread(_require, lab, principal, name)
    lab.consoles.audit.record("class-end", user=principal.name, **{"class": name})
    return await lab.classes.remove(name)


@router.get("/classes/{name}/results.json")
def results_json(request: Request, name: str, principal: Caller) -> PlainTextResponse:
    lab = lab_of(request)
    body = json.dumps(_table(lab, _require(lab, principal, name)), indent=2) + "\n"
    return PlainTextResponse(body, media_type="application/json",
                             headers=_attachment(f"{name}-results.json"))  # fmt: skip


@router.get("/classes/{name}/results.csv")
def results_as_csv(request: Request, name: str, principal: Caller) -> PlainTextResponse:
    lab = lab_of(request)
    rows = lab.classes.results(_require(lab, principal, name).name)
    return PlainTextResponse(results_csv(rows), media_type="text/csv",
                             headers=_attachment(f"{name}-results.csv"))  # fmt: skip


def _attachment(filename: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store"}  # fmt: skip


@router.get("/classes/{name}/events")
async def events(request: Request, name: str, principal: Caller) -> StreamingResponse:
    """Server-sent events: `table` with the whole table whenever it changes (an attempt
    changed, or a VM's state did), `ended` when the class is removed."""
    lab = lab_of(request)
    await asyncio.to_thread(_require, lab, principal, name)
    return StreamingResponse(_stream(lab, name), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store",
                                      "X-Accel-Buffering": "no"})  # fmt: skip


async def _stream(lab: Lab, name: str) -> AsyncIterator[str]:
    feed = lab.classes.feed(name)
    last, quiet_since = "", time.monotonic()
    while True:
        try:
            classroom = await asyncio.to_thread(lab.classes.get, name)
        except LabError:
            yield f"event: ended\ndata: {json.dumps({'class': name})}\n\n"
            return
        table = await asyncio.to_thread(_table, lab, classroom)
        # What changed, leaving out the clock (the page counts elapsed time itself).
        shown = json.dumps({**table, "now": None}, sort_keys=True)
        if shown != last:
            last, quiet_since = shown, time.monotonic()
            yield f"event: table\ndata: {json.dumps(table)}\n\n"
        elif time.monotonic() - quiet_since > KEEPALIVE_S:
            quiet_since = time.monotonic()
            yield ": still here\n\n"
        await feed.wait(REFRESH_S)


@router.websocket("/watch/{group}/{name}")
async def watch(ws: WebSocket, group: str, name: str) -> None:
    """A trainee's scenario console, read-only, with the recent output replayed first: for the
    trainee's instructors (and whoever may connect to that VM's console)."""
    accepted = await accept_with_token(ws)
    if accepted is None:
        return
    principal = accepted[0]
    lab = lab_of(ws)
    framing = utf8_framing()
    rid = scenario_vm_id(group, name)
    try:
        if not (principal.may(CONNECT_ACTION, rid)
                or await asyncio.to_thread(instructs, lab, principal, group)):  # fmt: skip
            raise AuthorizationFailed(
                f"The client '{principal.name}' with object id '{principal.object_id}' may "
                f"not watch the console of '{group}/{name}': it is neither an instructor of "
                "that trainee's class nor allowed to connect to the VM's serial console.",
                target=rid)  # fmt: skip
        view = await lab.scenarios.vm_now(name, group)
        if view is None:
            raise VmNotRunning(f"'{group}/{name}' has no VM now: the trainee has not started "
                               "it, or stopped it.", target=rid)  # fmt: skip
        broker, sub = lab.consoles.open_session(view, SessionMode.VIEW, principal.name,
                                                lab.settings.replay_bytes)  # fmt: skip
    except LabError as exc:
        await refuse(ws, exc, framing)
        return
    lab.consoles.audit.record("watch", vm=f"{group}/{name}", user=principal.name,
                              trainee_group=group, session=sub.id)  # fmt: skip
    await serve_console(ws, lab.consoles, view, broker, sub, 0.0, framing)
