"""Classes over `FakeHypervisor`: rosters parse (and bad ones say where), a class makes its users
and scopes each trainee to a group of their own, trainees sign in with the authority and start
their own copies of one scenario, a trainee is refused on another's VM on every route, an
instructor watches, resets and reads the live table, the table is pushed as events, starts are
queued when the lab is full, and removing the class leaves no VM or user but keeps the results.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from lab.api.azure.app import create_azure_app
from lab.api.portal import classes as portal_classes
from lab.domain.classroom import numbered_trainees, parse_roster, scenario_vm_id
from lab.domain.errors import Conflict, InvalidInput
from lab.domain.labfile import DEFAULT_SUBSCRIPTION_ID
from lab.hypervisor.fake import FakeHypervisor
from lab.services.admission import Admission, Capacity
from lab.services.boot_slots import BootSlots
from lab.services.lab import Lab
from lab.settings import Settings
from lab.storage.images import ImageCache
from lab.storage.images.derived import derive
from tests.unit.fakelab import make_image, run
from tests.unit.test_azure_api import STORAGE_KEY, TOKEN_KEY
from tests.unit.test_scenarios import MINIMAL

API = "/_portal/api"


@pytest.fixture
def class_lab(settings: Settings, hv: FakeHypervisor, tmp_path: Path) -> Lab:
    for name in ("demo", "other"):
        root = tmp_path / "scenarios" / name
        root.mkdir(parents=True)
        (root / "scenario.yaml").write_text(MINIMAL)
    return Lab(settings.model_copy(update={"scenarios_dir": tmp_path / "scenarios"}), hv)


# -- rosters -------------------------------------------------------------------------------------
def test_rosters_parse_from_csv_and_yaml() -> None:
    csv_roster = "username,role,password\nann,,\nbob,trainee,Secret123!\nteach,instructor,\n"
    got = parse_roster(csv_roster, "class.csv")
    assert [(e.username, e.role, e.password) for e in got] == [
        ("ann", "trainee", None), ("bob", "trainee", "Secret123!"), ("teach", "instructor", None)]
    yaml_roster = ("trainees:\n  - ann\n  - {username: bob, password: Secret123!}\n"
                   "instructors: [t]\n")
    got = parse_roster(yaml_roster, "class.yaml")
    assert [(e.username, e.role) for e in got] == [("ann", "trainee"), ("bob", "trainee"),
                                                   ("t", "instructor")]  # fmt: skip
    assert [e.username for e in numbered_trainees("c1", 3)] == ["c1-01", "c1-02", "c1-03"]


@pytest.mark.parametrize(("text", "source", "words"), [
    ("name\nann\n", "r.csv", "r.csv:1: a CSV roster starts with a header"),
    ("username,age\nann,3\n", "r.csv", "r.csv:1: unknown column(s) age"),
    ("username,role\nann,boss\n", "r.csv", "r.csv:2: role 'boss'"),
    ("username\nann\nANN\n", "r.csv", "'ANN' is listed twice"),
    ("username\nann@x\n", "r.csv", "invalid username 'ann@x'"),
    ("username,password\nann,short\n", "r.csv", "fewer than 8 characters"),
    ("username,role\nt,instructor\n", "r.csv", "names no trainee"),
    ("trainees:\n  - [x]\n", "r.yaml", "is a username or {username, password}"),
    ("trainees: [a\n", "r.yaml", "r.yaml:"),
])  # fmt: skip
def test_bad_rosters_say_what_and_where(text: str, source: str, words: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_roster(text, source)
    assert words in err.value.message


# -- the class and its users -------------------------------------------------------------------
def test_a_class_makes_scoped_users_and_refuses_clashes_before_making_anything(
    class_lab: Lab,
) -> None:
    lab = class_lab
    roster = [*numbered_trainees("c1", 2), *parse_roster("username,role\nx,trainee\nteach,"
                                                         "instructor\n", "r.csv")]  # fmt: skip
    made, sheet = lab.classes.create("c1", roster)
    assert made.trainees == ("c1-01", "c1-02", "x") and made.instructors == ("teach",)
    passwords = {row["username"]: row["password"] for row in sheet}
    assert len(set(passwords.values())) == 4 and all(len(p) == 12 for p in passwords.values())
    trainee = lab.identity.user("c1-01")
    assert trainee is not None and trainee.has_secret(passwords["c1-01"])
    grants = [(a.role, a.scope) for a in lab.identity.assignments(trainee.object_id)]
    assert grants == [("Contributor", "/subscriptions/00000000-0000-0000-0000-000000000000/"
                                      "resourceGroups/c1-01")]  # fmt: skip
    teach = lab.identity.user("teach")
    assert teach is not None
    assert sorted(a.scope.rsplit("/", 1)[1] for a in lab.identity.assignments(
        teach.object_id)) == ["c1-01", "c1-02", "x"]  # fmt: skip
    # A second class may not reuse a trainee, and nothing of it is made.
    with pytest.raises(Conflict, match="user 'x' exists already"):
        lab.classes.create("c2", parse_roster("username\nnew1\nx\n", "r.csv"))
    assert lab.identity.user("new1") is None
    with pytest.raises(Conflict, match="class 'c1' exists already"):
        lab.classes.create("c1", numbered_trainees("zz", 1))
    with pytest.raises(InvalidInput, match="invalid class name"):
        lab.classes.create("Bad Name", numbered_trainees("zz", 1))


def _sign_in(c: httpx.AsyncClient, username: str, password: str) -> Any:
    async def go() -> dict[str, str]:
        r = await c.post("/adfs/oauth2/token", data={
            "grant_type": "password", "client_id": "serial-console-lab-portal",
            "username": username, "password": password,
            "scope": "https://management.azure.com/.default"})  # fmt: skip
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    return go()


async def _started(c: httpx.AsyncClient, who: dict[str, str], group: str, name: str) -> None:
    for _ in range(200):
        panel = (await c.get(f"{API}/scenarios/{group}/{name}", headers=who)).json()
        if panel["startedAt"] and panel["powerState"] == "running":
            return
        assert not panel["startError"], panel
        await asyncio.sleep(0.02)
    raise AssertionError(f"{group}/{name} never started: {panel}")


def test_trainees_work_on_their_own_copies_and_the_instructor_follows(class_lab: Lab) -> None:
    """Two trainees start the same scenario from the portal; each is refused on the other's
    VM on every route; the instructor reads the table (and its pushed events), resets a
    trainee's VM and watches nothing they may not; the audit log names everyone."""
    lab = class_lab
    roster = parse_roster("username,role,password\nann,,Passw0rd-ann\nbob,,Passw0rd-bob\n"
                          "teach,instructor,Passw0rd-teach\n", "r.csv")  # fmt: skip
    lab.classes.create("c1", roster)
    app = create_azure_app(lab, TOKEN_KEY, STORAGE_KEY)

    async def go() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://lab.test") as c:
            ann = await _sign_in(c, "ann", "Passw0rd-ann")
            bob = await _sign_in(c, "bob", "Passw0rd-bob")
            teach = await _sign_in(c, "teach", "Passw0rd-teach")
            me = (await c.get(f"{API}/me", headers=ann)).json()
            assert (me["traineeOf"], me["scenarioGroup"]) == ("c1", "ann")
            assert (await c.get(f"{API}/me", headers=teach)).json()["instructs"] == ["c1"]
            cat = (await c.get(f"{API}/scenarios", headers=ann)).json()
            assert cat["group"] == "ann"
            assert [(s["name"], s["started"], s["done"]) for s in cat["value"]] == [
                ("demo", False, False), ("other", False, False)]
            for who, group in ((ann, "ann"), (bob, "bob")):
                r = await c.post(f"{API}/scenarios/{group}/demo/start", headers=who)
                assert r.status_code == 202, r.text
            await _started(c, ann, "ann", "demo")
            await _started(c, bob, "bob", "demo")
            assert sorted(v.identity.key for v in lab.vms.list()) == [("ann", "demo"),
                                                                      ("bob", "demo")]
            # The RBAC of every scenario route: bob on ann's VM, and the instructor.
            base = f"{API}/scenarios/ann/demo"
            for method, path in (("GET", ""), ("POST", "/start"), ("POST", "/hint"),
                                 ("POST", "/check"), ("POST", "/reset"), ("POST", "/stop")):
                r = await c.request(method, base + path, headers=bob)
                assert r.status_code == 403, (method, path, r.text)
                assert r.json()["error"]["code"] == "AuthorizationFailed"
            assert (await c.get(base, headers=teach)).status_code == 200  # Reader there
            for path in ("/start", "/hint", "/check", "/stop"):
                assert (await c.post(base + path, headers=teach)).status_code == 403, path
            for path in ("", "/events", "/results.csv", "/results.json"):
                r = await c.get(f"{API}/classes/c1{path}", headers=ann)
                assert r.status_code == 403, path
            r = await c.delete(f"{API}/classes/c1", headers=ann)
            assert r.status_code == 403 and lab.classes.get("c1")
            # The Azure API too: bob sees his own VM only, and not ann's by id.
            vms = f"/subscriptions/{DEFAULT_SUBSCRIPTION_ID}/providers/Microsoft.Compute/" \
                  "virtualMachines?api-version=2024-07-01"
            listed = (await c.get(vms, headers=bob)).json()["value"]
            assert [v["id"].split("/")[4] for v in listed] == ["bob"]
            r = await c.get(f"{scenario_vm_id('ann', 'demo')}?api-version=2024-07-01",
                            headers=bob)  # fmt: skip
            assert r.status_code == 403, r.text
            # Hints are per trainee: ann's do not count for bob.
            assert (await c.post(f"{base}/hint", headers=ann)).json()["number"] == 1
            assert (await c.post(f"{base}/hint", headers=ann)).json()["number"] == 2
            r = await c.post(f"{API}/scenarios/bob/demo/hint", headers=bob)
            assert r.json()["number"] == 1
            # The instructor resets ann's VM, and the table shows it.
            assert (await c.post(f"{base}/reset", headers=teach)).status_code == 200
            table = (await c.get(f"{API}/classes/c1", headers=teach)).json()
            rows = {(r["trainee"], r["scenario"]): r for r in table["rows"]}
            assert (rows["ann", "demo"]["hintsUsed"], rows["ann", "demo"]["resets"]) == (2, 1)
            assert (rows["bob", "demo"]["hintsUsed"], rows["bob", "demo"]["resets"]) == (1, 0)
            assert rows["ann", "demo"]["state"] == "running"
            csv_text = (await c.get(f"{API}/classes/c1/results.csv", headers=teach)).text
            assert csv_text.splitlines()[0].startswith("trainee,scenario,state")
            assert len(csv_text.splitlines()) == 3
            exported = (await c.get(f"{API}/classes/c1/results.json", headers=teach)).json()
            def steady(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
                return [{k: v for k, v in r.items() if k != "elapsedSeconds"} for r in rows]

            assert steady(exported["rows"]) == steady(table["rows"])
            # The instructor ends the class from the portal.
            ended = (await c.delete(f"{API}/classes/c1", headers=teach)).json()
            assert ended["vmsDeleted"] == 2 and lab.classes.classes() == []
        entries = lab.consoles.audit.entries("ann")
        events = [e["event"] for e in entries]
        assert events[0] == "sign-in" and "scenario-start" in events
        assert events.count("scenario-hint") == 2
        teach_events = [e["event"] for e in lab.consoles.audit.entries("teach")]
        assert "scenario-reset" in teach_events and "class-end" in teach_events
        assert not any("Passw0rd" in json.dumps(e) for e in lab.consoles.audit.entries())

    run(lab, go)


def test_the_live_table_is_pushed_when_an_attempt_changes(class_lab: Lab) -> None:
    """The events route's stream (httpx's ASGI transport buffers whole answers, so the stream
    is read here directly; the route's RBAC is tested above): a table at once, the next one as
    soon as an attempt changes, well before the periodic refresh, and `ended` with the class."""
    lab = class_lab
    lab.classes.create("c1", parse_roster("username\nann\n", "r.csv"))

    async def go() -> None:
        await lab.scenarios.start("demo", group="ann", user="ann")
        stream = portal_classes._stream(lab, "c1")
        first = await anext(stream)
        assert first.startswith("event: table\n")
        assert json.loads(first.split("data: ", 1)[1])["rows"][0]["hintsUsed"] == 0
        pending = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0.1)
        lab.scenarios.hint("demo", "ann")
        started = time.monotonic()
        second = await asyncio.wait_for(pending, portal_classes.REFRESH_S)
        assert time.monotonic() - started < portal_classes.REFRESH_S / 2
        assert json.loads(second.split("data: ", 1)[1])["rows"][0]["hintsUsed"] == 1
        await lab.classes.remove("c1")
        assert (await anext(stream)).startswith("event: ended\n")

    run(lab, go)


def test_removing_a_class_leaves_nothing_but_its_results(class_lab: Lab,
                                                         hv: FakeHypervisor) -> None:  # fmt: skip
    lab = class_lab
    lab.identity.add_user("teach", "Passw0rd-teach")  # an instructor from before the class
    roster = parse_roster("username,role\nann,\nbob,\nteach,instructor\n", "r.csv")
    lab.classes.create("c1", roster)

    async def go() -> None:
        await lab.scenarios.start("demo", group="ann", user="ann")
        await lab.scenarios.start("other", group="bob", user="bob")
        lab.scenarios.hint("demo", "ann")
        disks = sorted(p.name for p in lab.settings.disk_dir.rglob("*") if p.is_file())
        assert disks
        gone = await lab.classes.remove("c1")
        assert (gone["vmsDeleted"], gone["usersRemoved"]) == (2, 2)
        assert lab.vms.list() == [] and hv.list_domains(lab.ctx.lab_id) == []
        assert not [p for p in lab.settings.disk_dir.rglob("*") if p.is_file()]
        assert lab.identity.user("ann") is None and lab.identity.user("bob") is None
        teach = lab.identity.user("teach")
        assert teach is not None and lab.identity.assignments(teach.object_id) == []
        assert lab.classes.classes() == [] and lab.scenarios.attempts() == []
        kept = json.loads(Path(gone["results"]).read_text())
        assert {(r["trainee"], r["scenario"], r["hintsUsed"]) for r in kept["rows"]} == {
            ("ann", "demo", 1), ("bob", "other", 0)}
        assert Path(gone["resultsCsv"]).read_text().count("\n") == 3

    run(lab, go)


# -- admission -----------------------------------------------------------------------------------
def test_a_start_over_the_boot_ceiling_is_queued_then_runs() -> None:
    async def go() -> None:
        slots = BootSlots(size=8)
        admission = Admission(slots, lambda: Capacity(0, 10_000), max_booting=2)
        booting: list[str] = []
        peak = 0
        release = asyncio.Event()

        async def start(key: str) -> None:
            nonlocal peak
            async with admission.admit(key, 512):
                booting.append(key)
                peak = max(peak, len(booting))
                await release.wait()
                booting.remove(key)

        tasks = [asyncio.create_task(start(k)) for k in ("a", "b", "c")]
        for _ in range(50):
            await asyncio.sleep(0.01)
        assert sorted(booting) == ["a", "b"]
        assert admission.position("c") == (1, 10.0)  # one boot ahead, 20 s over 2 slots
        assert admission.status()["queue"][0]["key"] == "c"
        release.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 2)
        assert peak == 2 and admission.peak_booting == 2 and admission.position("c") is None

    asyncio.run(go())


def test_a_start_whose_vm_holds_its_boot_slot_counts_once(tmp_path: Path) -> None:
    """Between power-on and the end of the admitted body, a VM is both an admitted start and a
    boot slot's holder: counted twice, the queue read three boots on a ceiling of two (the
    clean-clone run at d99dcbb) and held a free slot back."""

    async def go() -> None:
        slots = BootSlots(size=8, timeout=30)
        admission = Admission(slots, lambda: Capacity(0, 10_000), max_booting=2)
        log = tmp_path / "console.log"
        log.write_bytes(b"")

        async def power_on() -> None:
            pass

        async def start(key: str) -> None:
            async with admission.admit(key, 512, domain=f"dom-{key}"):
                await slots.boot(f"dom-{key}", log, power_on)
                await asyncio.sleep(0.3)  # the rest of create_from_definition

        tasks = [asyncio.create_task(start(k)) for k in ("a", "b", "c")]
        await asyncio.sleep(0.2)
        assert admission.status()["booting"] == 2 and admission.position("c") is not None
        await asyncio.wait_for(asyncio.gather(*tasks[:2]), 2)
        assert admission.peak_booting == 2
        for key in ("a", "b"):
            slots.release(f"dom-{key}")
        await asyncio.wait_for(tasks[2], 2)
        assert admission.peak_booting == 2
        slots.release("dom-c")

    asyncio.run(go())


def test_over_the_hard_limits_a_start_is_refused_with_the_reason() -> None:
    async def go() -> None:
        admission = Admission(BootSlots(size=2), lambda: Capacity(0, 4096),
                              memory_percent=50, queue_max=0)  # fmt: skip
        with pytest.raises(Conflict, match=r"needs 4096 MiB, over the lab's memory ceiling "
                                           r"of 2048 MiB"):  # fmt: skip
            async with admission.admit("big", 4096):
                pass
        with pytest.raises(Conflict, match="cannot queue: 0 starts wait already"):
            async with admission.admit("small", 512):
                pass

    asyncio.run(go())


def test_memory_over_the_ceiling_queues_until_memory_frees() -> None:
    async def go() -> None:
        used = {"mib": 3000}
        admission = Admission(BootSlots(size=2), lambda: Capacity(used["mib"], 4000),
                              memory_percent=100)  # fmt: skip
        entered = asyncio.Event()

        async def start() -> None:
            async with admission.admit("x", 2000):
                entered.set()

        task = asyncio.create_task(start())
        await asyncio.sleep(0.3)
        assert not entered.is_set() and admission.position("x") == (1, None)  # no estimate
        assert admission.status()["waitingFor"] == "memory"
        used["mib"] = 1000
        await asyncio.wait_for(task, 2)

    asyncio.run(go())


# -- a class starting the same scenario at once ---------------------------------------------------
def test_many_threads_deriving_one_image_at_once_all_get_it(tmp_path: Path) -> None:
    """Five trainees' starts derive the same broken disk at the same moment: each gets it
    (the pointer to it was once swapped in through one temporary name per process, and
    threads of the daemon tore each other's down)."""
    cache = ImageCache(tmp_path / "cache", tmp_path / "recipes")
    make_image(cache.cache_dir, "tiny", disk=True)
    gate = threading.Barrier(5)

    def make_disk(base: Path, out: Path) -> None:
        shutil.copyfile(base, out)
        gate.wait(timeout=10)  # all five build, then all five publish and point at once

    with ThreadPoolExecutor(5) as pool:
        made = list(pool.map(lambda _: derive(cache, "tiny", "scn-x", "k", make_disk), range(5)))
    assert {m.name for m in made} == {"scn-x"} and cache.get("scn-x").disk == "disk.qcow2"


def test_one_scenario_is_prepared_once_at_a_time(class_lab: Lab, monkeypatch: Any) -> None:
    """The daemon builds a broken disk once for a class starting together, not once each."""
    running, most = 0, 0
    lock = threading.Lock()

    def slow_derive(*args: Any) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    monkeypatch.setattr("lab.services.scenarios.derive", slow_derive)
    scenario = class_lab.scenarios.get("demo")
    with ThreadPoolExecutor(5) as pool:
        list(pool.map(lambda _: class_lab.scenarios.prepare(scenario), range(5)))
    assert most == 1


def test_a_sheet_password_signs_in_once_to_choose_ones_own(class_lab: Lab) -> None:
    lab = class_lab
    _, sheet = lab.classes.create("c1", numbered_trainees("c1", 1))
    given = sheet[0]["password"]
    app = create_azure_app(lab, TOKEN_KEY, STORAGE_KEY)

    async def go() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://lab.test") as c:
            async def grant(password: str) -> httpx.Response:
                return await c.post("/adfs/oauth2/token", data={
                    "grant_type": "password", "client_id": "serial-console-lab-portal",
                    "username": "c1-01", "password": password,
                    "scope": "https://management.azure.com/.default"})  # fmt: skip

            r = await grant(given)
            assert r.status_code == 400 and r.json()["error_codes"] == [50055]
            change = f"{API}/password"
            for current, new, words in ((given + "x", "Mine-123!", "current password is wrong"),
                                        (given, given, "not the one you have"),
                                        (given, "short", "at least 8")):  # fmt: skip
                r = await c.post(change, json={"username": "c1-01", "currentPassword": current,
                                               "newPassword": new})  # fmt: skip
                assert r.status_code == 400 and words in r.json()["error"]["message"], r.text
            r = await c.post(change, json={"username": "c1-01", "currentPassword": given,
                                           "newPassword": "Mine-123!"})  # fmt: skip
            assert r.status_code == 200, r.text
            assert (await grant("Mine-123!")).status_code == 200
            assert (await grant(given)).json()["error_codes"] == [50126]
        events = [e["event"] for e in lab.consoles.audit.entries("c1-01")]
        assert "password-changed" in events
        assert given not in json.dumps(lab.consoles.audit.entries())

    run(lab, go)


def test_a_queued_start_shows_in_the_table_with_its_place(class_lab: Lab) -> None:
    lab = class_lab
    lab.classes.create("c1", parse_roster("username\nann\nbob\n", "r.csv"))

    async def go() -> None:
        roomy = lab.admission.capacity
        lab.admission.capacity = lambda: Capacity(10_000, 10_000)  # full: starts wait
        start = asyncio.create_task(lab.scenarios.start("demo", group="ann", user="ann"))
        for _ in range(100):
            if lab.admission.position("ann/demo"):
                break
            await asyncio.sleep(0.01)
        rows = {r["trainee"]: r for r in lab.classes.results("c1")}
        assert rows["ann"]["scenario"] == "demo" and rows["ann"]["state"] == "queued"
        assert (rows["ann"]["queuePosition"], rows["ann"]["queueEstimateSeconds"]) == (1, None)
        assert (rows["bob"]["scenario"], rows["bob"]["state"]) == (None, "not started")
        lab.admission.capacity = roomy
        await asyncio.wait_for(start, 5)
        rows = {r["trainee"]: r for r in lab.classes.results("c1")}
        assert rows["ann"]["state"] == "running" and "queuePosition" not in rows["ann"]

    run(lab, go)
