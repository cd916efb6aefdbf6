"""A class in a real browser: Debian's Chromium (Playwright) on the lab's HTTPS origin, three
trainees and an instructor, each in a browser context of their own, on real tiny guests.

Two trainees start the same scenario and the third another; each fixes their own by typing in
the portal's terminal (the scenarios' reference solutions, adapted to the browser: the same
command line, typed), asks for a hint or resets on the way, and presses "Check my fix". The
instructor's table, pushed by the server, shows each step as it happens; the instructor
watches a console read-only and exports the results, which match the table. Then: starts over
the boot ceiling are queued and run, and removing the class leaves no domain, disk or user
behind, only the results file.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.client.http import LabClient
from lab.settings import REPO_ROOT
from tests.integration.labharness import LabHarness, virsh
from tests.integration.test_portal import CHROMIUM, Portal, browser, shots  # noqa: F401

pytestmark = pytest.mark.integration

ROSTER = """\
username,role,password
ct-ann,trainee,Ann-pass-123
ct-bob,trainee,Bob-pass-123
ct-cy,trainee,
ct-teach,instructor,Teach-pass-1
"""
SAME, OTHER = "config-typo", "crlf-config"
#: The class's sign-in sheet: ct-cy's password is made by the lab, good for one sign-in.
SHEET: dict[str, str] = {}


def fix_of(scenario: str) -> str:
    """The command line the scenario's reference solution types."""
    path = REPO_ROOT / "scenarios" / scenario / "solution.py"
    spec = importlib.util.spec_from_file_location(f"fix_{scenario.replace('-', '_')}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.FIX)


@pytest.fixture(scope="module")
def classroom(harness: LabHarness) -> Iterator[LabHarness]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium")
    roster = harness.data_dir / "roster.csv"
    roster.write_text(ROSTER)
    made = json.loads(harness.cli("class", "create", "ct", "--roster", str(roster),
                                  "--json").stdout)  # fmt: skip
    SHEET.update({row["username"]: row["password"] for row in made["sheet"]})
    try:
        yield harness
    finally:
        harness.cli("class", "rm", "ct", "--yes", check=False, timeout=300)


class Trainee(Portal):
    def start(self, scenario: str) -> None:
        """From the catalogue: Start, then wait for the console page the catalogue opens."""
        self.page.wait_for_selector(f"#start-{scenario}")
        self.page.click(f"#start-{scenario}")
        self.page.wait_for_url("**/-/console", timeout=120_000)
        self.page.wait_for_selector("#scenario-timer")

    def login_after_boot(self) -> None:
        """Log in on the fresh boot (after a reset): a clean screen, Enter until it shows
        a login prompt, as a trainee presses Enter on a quiet console."""
        self.page.evaluate("() => window.labTerminal.clear()")
        deadline = time.monotonic() + 90
        while not re.search(r"login: ", self.screen()):
            assert time.monotonic() < deadline, f"no login prompt: {self.screen()[-500:]}"
            self.type("\n")
            time.sleep(2)
        self.console_login()

    def check(self) -> str:
        self.page.click("#check")
        status = self.page.locator("#check-status")
        status.filter(has_not_text="Running the checks").wait_for(timeout=180_000)
        return status.inner_text()


def row(trainee: str, scenario: str) -> str:
    """The instructor's table row of a trainee's scenario."""
    return f"#row-{trainee}-{scenario}"


def wait_cell(instructor: Portal, trainee: str, scenario: str, cell: str, text: str) -> None:
    """Until the instructor's table (pushed by the server) shows `text` in that cell."""
    instructor.page.wait_for_selector(f"{row(trainee, scenario)} .{cell}:text-is("
                                      f"'{text}')", timeout=60_000)  # fmt: skip


def test_three_trainees_fix_their_own_copies_while_the_instructor_follows(
    classroom: LabHarness, browser: Any, shots: Path,  # noqa: F811
) -> None:
    teach = Portal(classroom, browser)
    ann, bob, cy = (Trainee(classroom, browser) for _ in range(3))
    try:
        teach.sign_in_as("ct-teach", "Teach-pass-1")
        teach.page.wait_for_selector("#nav-classes")
        teach.page.goto(f"{teach.url}#/class/ct")
        teach.page.wait_for_selector("#class-status:has-text('Live: 3 trainees')")
        ann.sign_in_as("ct-ann", "Ann-pass-123")
        bob.sign_in_as("ct-bob", "Bob-pass-123")
        # cy's password is the sheet's: it signs in once, to choose cy's own.
        cy.sign_in_as("ct-cy", SHEET["ct-cy"])
        cy.page.fill("#new-password", "Cy-own-pass-1")
        cy.page.fill("#new-password-again", "Cy-own-pass-1")
        cy.page.click("#new-password-save")
        cy.page.wait_for_selector("#catalogue")
        cy.errors.clear()  # the authority's 400 (AADSTS50055) is the browser's network log
        for who in (ann, bob, cy):
            who.page.wait_for_selector("#catalogue")  # a trainee's home is the catalogue
        ann.page.screenshot(path=str(shots / "20-catalogue.png"))
        ann.start(SAME)
        bob.start(SAME)
        cy.start(OTHER)
        for trainee, scenario in (("ct-ann", SAME), ("ct-bob", SAME), ("ct-cy", OTHER)):
            teach.page.wait_for_selector(f"{row(trainee, scenario)}[data-state='running']",
                                         timeout=60_000)  # fmt: skip

        # ann: a hint first (the table shows it at once), then the fix.
        ann.page.click("#hint")
        wait_cell(teach, "ct-ann", SAME, "hints", "1")
        ann.console_login()
        ann.type(fix_of(SAME) + "\n")
        assert "Every check passed" in ann.check()
        ann.page.wait_for_selector("#scenario-report:has-text('Solved in')")
        wait_cell(teach, "ct-ann", SAME, "last-check", "2/2 passed")
        teach.page.wait_for_selector(f"{row('ct-ann', SAME)}[data-state='solved']")

        # bob: checks too early (fails), resets (confirmed), then fixes his own copy: ann's
        # fix did not touch it. The instructor watches his console, read-only, meanwhile.
        bob.console_login()
        assert "Not fixed yet" in bob.check()
        wait_cell(teach, "ct-bob", SAME, "last-check", "1/2 passed")
        teach.page.click(f"#watch-ct-bob-{SAME}")
        teach.wait_screen(r"login: |\$ ", timeout=30)  # the replay shows where bob is
        bob.page.click("#scenario-reset")
        bob.confirm()
        bob.page.wait_for_selector("#check-status:has-text('booting from its broken disk')")
        bob.login_after_boot()
        bob.type(fix_of(SAME) + "\n")
        teach.wait_screen(r"port = 8080", timeout=30)  # bob's typing, seen by the instructor
        teach.page.screenshot(path=str(shots / "21-instructor-watching.png"))
        assert "Every check passed" in bob.check()

        # cy: the other scenario.
        cy.console_login()
        cy.type(fix_of(OTHER) + "\n")
        assert "Every check passed" in cy.check()

        teach.page.goto(f"{teach.url}#/class/ct")
        for trainee, scenario in (("ct-ann", SAME), ("ct-bob", SAME), ("ct-cy", OTHER)):
            teach.page.wait_for_selector(f"{row(trainee, scenario)}[data-state='solved']")
        teach.page.screenshot(path=str(shots / "22-instructor-table.png"))
        table = teach.page.evaluate("() => window.labClassTable")
        with teach.page.expect_download() as download:
            teach.page.click("#export-csv")
        exported = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
        assert [(r["trainee"], r["scenario"], r["state"], r["hintsUsed"], r["resets"],
                 r["lastCheck"]) for r in exported] == [
            (r["trainee"], r["scenario"], r["state"], str(r["hintsUsed"]), str(r["resets"]),
             r["lastCheck"]) for r in table["rows"]]  # fmt: skip
        assert {(r["trainee"], r["scenario"], r["hintsUsed"], r["resets"]) for r in exported} == {
            ("ct-ann", SAME, "1", "0"), ("ct-bob", SAME, "0", "1"), ("ct-cy", OTHER, "0", "0")}
        # Two VMs of one scenario, each in its trainee's group, on one shared broken disk.
        vms = json.loads(classroom.cli("ls", "--json").stdout)
        mine = sorted((v["resourceGroup"], v["name"]) for v in vms if v["name"] in (SAME, OTHER))
        assert mine == [("ct-ann", SAME), ("ct-bob", SAME), ("ct-cy", OTHER)]
    finally:
        errors = [e for p in (teach, ann, bob, cy) for e in p.close()]
    assert errors == [], f"browser console errors: {errors}"
    events = [e["event"] for e in classroom.client.json("GET", "/v1/audit",
                                                        params={"user": "ct-bob"})]  # fmt: skip
    for event in ("sign-in", "scenario-start", "scenario-check", "scenario-reset", "connect"):
        assert event in events, (event, events)
    watched = classroom.client.json("GET", "/v1/audit", params={"user": "ct-teach"})
    assert any(e["event"] == "watch" and e["vm"] == f"ct-bob/{SAME}" for e in watched)
    assert "pass-12" not in json.dumps(classroom.client.json("GET", "/v1/audit"))


def test_starts_over_the_boot_ceiling_are_queued_and_nothing_overloads(
    classroom: LabHarness,
) -> None:
    """Three starts at once with a ceiling of two booting guests: the third waits in the queue
    (with a place and an estimate) and then runs; never more than two boot at once."""
    c = classroom.client
    ceiling = c.json("GET", "/v1/admission")["maxBooting"]
    assert ceiling == 2, "this test needs the default ceiling of this 2-core machine"
    # Scenarios each trainee has not started yet: three new VMs.
    wanted = (("ct-ann", OTHER), ("ct-bob", OTHER), ("ct-cy", SAME))
    queued: list[dict[str, Any]] = []
    seen_done = threading.Event()

    def watch() -> None:
        while not seen_done.is_set():
            queued.extend(c.json("GET", "/v1/admission")["queue"])
            time.sleep(0.05)

    def start(trainee: str, scenario: str) -> None:
        # The daemon API itself (what `lab scenario start --user` sends), so the three
        # requests arrive together, not a CLI process start apart.
        own = LabClient(classroom.settings)
        try:
            own.json("POST", f"/v1/scenarios/{scenario}/start", params={"user": trainee})
        finally:
            own.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    starts = [threading.Thread(target=start, args=(trainee, scenario))
              for trainee, scenario in wanted]  # fmt: skip
    try:
        for t in starts:
            t.start()
        for t in starts:
            t.join(timeout=300)
    finally:
        seen_done.set()
        watcher.join()
    status = c.json("GET", "/v1/admission")
    assert status["peakBooting"] <= ceiling, status
    assert queued and queued[0]["position"] == 1 and queued[0]["estimateSeconds"] > 0, queued
    for trainee, scenario in wanted:
        state = c.json("GET", f"/v1/scenarios/{scenario}", params={"user": trainee})
        assert state["vm"] == "running", state


def test_removing_the_class_leaves_nothing_but_the_results(classroom: LabHarness) -> None:
    done = classroom.cli("class", "rm", "ct", "--yes", timeout=300)
    results = Path(done.stdout.split("results in ")[1].split(" and ")[0])
    kept = json.loads(results.read_text())
    assert {r["trainee"] for r in kept["rows"]} == {"ct-ann", "ct-bob", "ct-cy"}
    domains = virsh(classroom.settings.libvirt_uri, "list", "--all", "--name")
    assert not [d for d in domains.split() if any(g in d for g in ("ct-ann", "ct-bob", "ct-cy"))]
    disks = [p for p in classroom.settings.disk_dir.rglob("*") if "ct-" in str(p)]
    assert disks == []
    users = json.loads(classroom.cli("user", "ls", "--json").stdout)
    assert not [u for u in users if u["name"].startswith("ct-")]
    assert classroom.cli("class", "show", "ct", check=False).returncode == 3
