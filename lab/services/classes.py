"""Classes: a roster of trainees (lab users, each scoped to a resource group of their own) and
instructors, the live table of their scenario attempts, and the end of a class, which removes
every VM, disk, user and role assignment it made and keeps the results in a file.

Kept in `<data dir>/state/resources.json` (`classes`); ended classes' results in
`<data dir>/classes/<name>-<time>.results.json` and `.csv`.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lab.domain.classroom import (
    Classroom,
    RosterEntry,
    check_class_name,
    check_roster,
    group_scope,
    new_password,
    result_row,
    results_csv,
    trainee_group,
)
from lab.domain.errors import Conflict, NotFound
from lab.services.identity import IdentityService
from lab.services.scenarios import ScenarioService, attempt_group, start_key
from lab.services.vms import VmService
from lab.storage.state import StateFile

log = logging.getLogger(__name__)

_KEY = "classes"
TRAINEE_ROLE = "Contributor"
INSTRUCTOR_ROLE = "Reader"


class ClassFeed:
    """Wakes the instructors' live tables when a class's attempts change. Changes come from the
    event loop and from worker threads (a hint is a sync route), so a wake-up hops onto the
    loop that waits."""

    def __init__(self) -> None:
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._lock = threading.Lock()

    def notify(self) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, event in waiters:
            loop.call_soon_threadsafe(event.set)

    async def wait(self, timeout: float) -> None:
        """Until the next change, or `timeout` seconds."""
        entry = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.add(entry)
        try:
            await asyncio.wait_for(entry[1].wait(), timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters.discard(entry)


class ClassService:
    def __init__(self, state: StateFile, identity: IdentityService, scenarios: ScenarioService,
                 vms: VmService, results_dir: Path,
                 queued: Callable[[str], tuple[int, float | None] | None] = lambda key: None,
                 ) -> None:  # fmt: skip
        self.state = state
        self.identity = identity
        self.scenarios = scenarios
        self.vms = vms
        self.results_dir = results_dir
        self.queued = queued
        self.feeds: dict[str, ClassFeed] = {}
        state.section(_KEY, dict[str, Classroom], "the classes")
        scenarios.listeners.append(self._changed)

    # -- reading -----------------------------------------------------------------------------
    def classes(self) -> builtins.list[Classroom]:
        stored = self.state.read().get(_KEY, {}).values()
        return sorted((Classroom.model_validate(c) for c in stored), key=lambda c: c.name)

    def get(self, name: str) -> Classroom:
        raw = self.state.read().get(_KEY, {}).get(name)
        if raw is None:
            known = ", ".join(c.name for c in self.classes()) or "none"
            raise NotFound(f"no class '{name}'; classes: {known} (`lab class ls`)", target=name)
        return Classroom.model_validate(raw)

    def of_trainee(self, username: str) -> Classroom | None:
        return next((c for c in self.classes() if c.has_trainee(username)), None)

    def instructed_by(self, username: str) -> builtins.list[Classroom]:
        return [c for c in self.classes() if c.has_instructor(username)]

    def feed(self, name: str) -> ClassFeed:
        return self.feeds.setdefault(name, ClassFeed())

    # -- making and ending ---------------------------------------------------------------------
    def create(self, name: str, roster: builtins.list[RosterEntry],
               ) -> tuple[Classroom, builtins.list[dict[str, str]]]:  # fmt: skip
        """Make the class: its users (with the passwords the roster gives, or new ones) and
        their role assignments. Returns the class and the sign-in sheet, the only place the
        made passwords appear. Everything is checked before anything is made."""
        check_class_name(name)
        check_roster(roster, "the roster")
        if name in self.state.read().get(_KEY, {}):
            raise Conflict(f"class '{name}' exists already (`lab class show {name}`)",
                           target=name)  # fmt: skip
        trainees = [e for e in roster if e.role == "trainee"]
        instructors = [e for e in roster if e.role == "instructor"]
        for entry in trainees:
            if self.identity.user(entry.username) is not None:
                raise Conflict(f"user '{entry.username}' exists already; a trainee is a new user "
                               "of their class (remove them, or choose another name)",
                               target=entry.username)  # fmt: skip
        sheet, made = [], []
        for entry in roster:
            if entry.role == "instructor" and self.identity.user(entry.username) is not None:
                sheet.append({"username": entry.username, "role": "instructor",
                              "password": "(unchanged: an existing user)"})  # fmt: skip
                continue
            password = entry.password or new_password()
            # A made password is on the sheet: good for one sign-in, to choose one's own.
            self.identity.add_user(entry.username, password, temporary=entry.password is None)
            made.append(entry.username)
            sheet.append({"username": entry.username, "role": entry.role,
                          "password": password if entry.password is None
                          else "(as in the roster)"})  # fmt: skip
        for entry in trainees:
            scope = group_scope(trainee_group(entry.username))
            self.identity.create_assignment(entry.username, TRAINEE_ROLE, scope)
            for instructor in instructors:
                self.identity.create_assignment(instructor.username, INSTRUCTOR_ROLE, scope)
        classroom = Classroom(
            name=name, created_at=time.time(),
            trainees=tuple(e.username for e in trainees),
            instructors=tuple(e.username for e in instructors),
            made_instructors=tuple(e.username for e in instructors if e.username in made),
        )  # fmt: skip
        self._save(classroom)
        return classroom, sheet

    async def remove(self, name: str) -> dict[str, Any]:
        """End the class: delete its trainees' VMs (and so their disks), users and role
        assignments, and the instructors it made; keep the results in a file first."""
        classroom = self.get(name)
        # The table lists the VMs (libvirt, seconds while libvirtd is busy) and the files are
        # written: off the event loop.
        base = await asyncio.to_thread(self._keep_results, classroom)
        groups = {trainee_group(t) for t in classroom.trainees}
        doomed = [v for v in await self.vms.list_now() if v.identity.key[0] in groups]
        await asyncio.gather(*(self.vms.delete(v) for v in doomed))
        for trainee in classroom.trainees:
            self.scenarios.forget(trainee_group(trainee))
            if self.identity.user(trainee) is not None:
                self.identity.remove(trainee)
        for instructor in classroom.instructors:
            if instructor in classroom.made_instructors:
                self.identity.remove(instructor)
                continue
            for group in groups:  # an existing user keeps what they held before the class
                with contextlib.suppress(NotFound):
                    self.identity.delete_assignments(ref=instructor, role_name=INSTRUCTOR_ROLE,
                                                     scope=group_scope(group))  # fmt: skip
        classes = self.state.read().get(_KEY, {})
        classes.pop(name, None)
        self.state.update(_KEY, classes)
        self.feed(name).notify()
        return {"class": name, "vmsDeleted": len(doomed),
                "usersRemoved": len(classroom.trainees) + len(classroom.made_instructors),
                "results": str(base.with_suffix(".results.json")),
                "resultsCsv": str(base.with_suffix(".results.csv"))}  # fmt: skip

    def _keep_results(self, classroom: Classroom) -> Path:
        """Write the class's table and attempts to `<results dir>/<name>-<time>.results.*`;
        returns that path without its suffix."""
        results = self.results(classroom.name)
        attempts = {t: self.scenarios.attempts(trainee_group(t)) for t in classroom.trainees}
        self.results_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        base = self.results_dir / f"{classroom.name}-{stamp}"
        payload = {"class": classroom.name, "endedAt": time.time(), "rows": results,
                   "attempts": attempts}  # fmt: skip
        base.with_suffix(".results.json").write_text(json.dumps(payload, indent=2) + "\n")
        base.with_suffix(".results.csv").write_text(results_csv(results))
        return base

    # -- the results table -----------------------------------------------------------------------
    def results(self, name: str) -> builtins.list[dict[str, Any]]:
        """One row per trainee and scenario they started (their latest attempt), and one per
        trainee with nothing started; queued starts show with their place in the queue."""
        classroom = self.get(name)
        now = time.time()
        groups = {trainee_group(t): t for t in classroom.trainees}
        vms = {v.identity.key: v for v in self.vms.list() if v.identity.key[0] in groups}
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for attempt in self.scenarios.attempts():
            group = attempt_group(attempt).lower()
            if group in groups:
                latest[(group, attempt["scenario"])] = attempt
        rows = []
        for group, trainee in groups.items():
            mine = []
            for (g, scenario), attempt in sorted(latest.items()):
                if g == group:
                    state = _state(attempt, vms.get((group, scenario.lower())))
                    mine.append(result_row(trainee, group, attempt, state=state, now=now))
            known = {row["scenario"] for row in mine}
            # Starts under way with no attempt yet (queued, or their VM being made).
            mine += [{"trainee": trainee, "group": group, "scenario": scenario,
                      **scenario_pending(self.queued(start_key(group, scenario)))}
                     for scenario in self.scenarios.starting_in(group) if scenario not in known]
            rows += mine or [{"trainee": trainee, "group": group, "scenario": None,
                              "state": "not started"}]  # fmt: skip
        return rows

    # -- internals -------------------------------------------------------------------------------
    def _save(self, classroom: Classroom) -> None:
        classes = self.state.read().get(_KEY, {})
        classes[classroom.name] = classroom.model_dump(mode="json")
        self.state.update(_KEY, classes)

    def _changed(self, group: str) -> None:
        for classroom in self.classes():
            if any(trainee_group(t) == group.lower() for t in classroom.trainees):
                self.feed(classroom.name).notify()


def scenario_pending(queued: tuple[int, float | None] | None) -> dict[str, Any]:
    if queued is None:
        return {"state": "starting"}
    position, estimate = queued
    return {"state": "queued", "queuePosition": position, "queueEstimateSeconds": estimate}


def _state(attempt: dict[str, Any], view: Any) -> str:
    if attempt.get("solvedAt"):
        return "solved"
    if view is None:
        return "stopped"
    return str(view.power_state.value)
