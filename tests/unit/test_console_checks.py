"""Scenario checks over a console: telling a guest that will give a login prompt from one that
is stuck (the engine's signs and a scenario's own), against a scripted console."""

from __future__ import annotations

import io
import queue
import time
from collections.abc import Iterator

import pytest

from lab.client.checks import reach_login, run_checks
from lab.client.maintenance import maintenance_shell
from lab.client.session import CommandFailed, ConsoleSession
from lab.domain.scenario import parse_scenario


class ScriptedConsole:
    """A guest that answers each Enter with the next of `screens` (the last one repeats)."""

    def __init__(self, *screens: str) -> None:
        self.screens = list(screens)
        self.incoming: queue.Queue[bytes | None] = queue.Queue()
        self.sent = b""

    def send(self, data: bytes) -> None:
        self.sent += data
        if data.endswith(b"\r"):
            screen = self.screens.pop(0) if len(self.screens) > 1 else self.screens[0]
            self.incoming.put(screen.encode())

    def __iter__(self) -> Iterator[bytes | str]:
        while (chunk := self.incoming.get()) is not None:
            yield chunk

    def close(self) -> None:
        self.incoming.put(None)


SCENARIO = """\
title: T
level: beginner
story: S
objective: O
checks:
  - {name: c, command: "true"}
stuck:
  "report-builder: building": the runaway job
"""


@pytest.mark.parametrize(
    ("screens", "expected"),
    [
        (["\r\n", "\r\ndebian login: "], None),
        (["[  OK  ] Reached target\r\n", "Give root password for maintenance\r\n"],
         "emergency mode"),
        (["\r\nreport-builder: building reports, pass 3\r\n"], "the runaway job"),
        (["\r\n"], "no login prompt in 1 s"),
    ],
)  # fmt: skip
def test_reach_login_tells_a_login_prompt_from_a_stuck_guest(screens: list[str],
                                                             expected: str | None) -> None:
    scenario = parse_scenario(SCENARIO, name="tt", source="tt/scenario.yaml")
    with ConsoleSession(ScriptedConsole(*screens), timeout=5) as session:
        assert reach_login(session, timeout=1, nudge=0.2, stuck=scenario.stuck) == expected


def test_a_stuck_guest_fails_every_check_with_the_reason_and_runs_none() -> None:
    scenario = parse_scenario(SCENARIO, name="tt", source="tt/scenario.yaml")
    console = ScriptedConsole("report-builder: building reports, pass 9\r\n")
    with ConsoleSession(console, timeout=5) as session:
        results = run_checks(session, scenario, boot_timeout=2)
    assert [r.passed for r in results] == [False]
    assert "the runaway job" in results[0].saw
    assert b"sudo" not in console.sent  # nothing was typed but Enter


def test_a_text_logfile_gets_control_keys_and_lines_as_text() -> None:
    log = io.StringIO()
    with ConsoleSession(ScriptedConsole("debian login: "), timeout=5, logfile=log) as session:
        session.sendcontrol("c")
        session.sendline("root")
        session.expect("login: ")
    assert log.getvalue().startswith("\x03root\r") and log.getvalue().endswith("debian login: ")


SULOGIN = "Give root password for maintenance\r\n(or press Control-D to continue): "


def test_the_maintenance_password_is_typed_again_after_an_old_prompt() -> None:
    console = ScriptedConsole(SULOGIN, f"\r\nLogin incorrect\r\n\r\n{SULOGIN}", "root@vm:~# ")
    with ConsoleSession(console, timeout=5) as session:
        maintenance_shell(session, "s3cret", timeout=5)
    assert console.sent == b"\rs3cret\rs3cret\r"


def test_a_wrong_maintenance_password_is_refused_with_a_clear_error() -> None:
    console = ScriptedConsole(SULOGIN, f"\r\nLogin incorrect\r\n\r\n{SULOGIN}")
    with ConsoleSession(console, timeout=5) as session, pytest.raises(PermissionError) as err:
        maintenance_shell(session, "wrong", timeout=5, tries=2)
    assert "refused 2 times" in str(err.value)


class ShellConsole(ScriptedConsole):
    """A shell that answers `run`'s marker lines: the command prints `said` and exits `status`."""

    def __init__(self, said: str, status: int) -> None:
        super().__init__("")
        self.said, self.status = said, status

    def send(self, data: bytes) -> None:
        line = data.decode()
        tag = line.split("__LAB_B_ ", 1)[1].split(";", 1)[0]
        answer = f"__LAB_B_{tag}\r\n{self.said}\r\n__LAB_E_{tag} {self.status}\r\n"
        self.incoming.put(answer.encode())


def test_run_ok_returns_the_output_or_says_what_failed() -> None:
    with ConsoleSession(ShellConsole("mounted", 0), timeout=5) as session:
        assert session.run_ok("mount /dev/vda1 /root").strip() == "mounted"
    failing = ShellConsole("sh: sed: not found", 127)
    with ConsoleSession(failing, vm="vm1", timeout=5) as session, \
            pytest.raises(CommandFailed) as err:  # fmt: skip
        session.run_ok("sed -i s/a/b/ f")
    assert "`sed -i s/a/b/ f` failed on vm1 with exit status 127: sh: sed: not found" in str(
        err.value)


def test_a_maintenance_password_that_vanished_is_typed_again() -> None:
    # sulogin flushed the first password (no answer at all); an Enter brings the prompt back.
    console = ScriptedConsole(SULOGIN, "", f"\r\nLogin incorrect\r\n\r\n{SULOGIN}", "root@vm:~# ")
    with ConsoleSession(console, timeout=5) as session:
        maintenance_shell(session, "s3cret", timeout=5, answer_timeout=1)
    assert console.sent == b"\rs3cret\r\rs3cret\r"


SOFT_LOCKUP = "[  52.1] watchdog: BUG: soft lockup - CPU#1 stuck for 224s! [ssh-keygen:252]\r\n"


def test_a_guest_whose_kernel_says_it_is_hung_is_reported_hung_not_slow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("lab.client.checks.HANG_GRACE_S", 0.5)
    scenario = parse_scenario(SCENARIO, name="tt", source="tt/scenario.yaml")
    with ConsoleSession(ScriptedConsole("\r\n", SOFT_LOCKUP, "\r\n"), timeout=5) as session:
        started = time.monotonic()
        why = reach_login(session, timeout=30, nudge=0.1, stuck=scenario.stuck)
    assert time.monotonic() - started < 10  # the grace, not the whole boot timeout
    assert why == ("the guest is hung: a soft lockup (watchdog: BUG: soft lockup - CPU#1 stuck "
                   "for 224s! [ssh-keygen:252])")  # fmt: skip


def test_a_guest_that_recovers_from_a_soft_lockup_still_gets_its_login(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("lab.client.checks.HANG_GRACE_S", 5.0)
    screens = (SOFT_LOCKUP, "\r\n", "\r\ndebian login: ")
    with ConsoleSession(ScriptedConsole(*screens), timeout=5) as session:
        assert reach_login(session, timeout=30, nudge=0.1) is None


def test_a_boot_that_finished_without_a_login_prompt_is_not_waited_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The debian image says when its boot is over; a masked serial getty then never prompts.
    monkeypatch.setattr("lab.client.checks.LOGIN_AFTER_BOOT_S", 0.5)
    finished = "[  31.2] lab-boot[402]: lab: boot finished\r\n"
    with ConsoleSession(ScriptedConsole("\r\n", finished, "\r\n"), timeout=5) as session:
        started = time.monotonic()
        why = reach_login(session, timeout=60, nudge=0.1)
    assert why == ("the boot finished but no login prompt came on the serial console in 0.5 s "
                   "after it")  # fmt: skip
    assert time.monotonic() - started < 10


def test_a_login_prompt_just_after_the_boot_finished_line_is_taken(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("lab.client.checks.LOGIN_AFTER_BOOT_S", 5.0)
    screens = ("lab-boot[402]: lab: boot finished\r\n", "\r\ndebian login: ")
    with ConsoleSession(ScriptedConsole(*screens), timeout=5) as session:
        assert reach_login(session, timeout=60, nudge=0.1) is None


def test_wait_for_login_boots_grubs_menu_with_enter_and_never_sends_it_ctrl_c() -> None:
    # Ctrl+C at GRUB's menu opens GRUB's command line, and the boot never comes (seen with a
    # script that asked for the login while a loaded host drew the menu slowly). A guest still
    # at its menu after an Enter (the key came before GRUB read keys) gets Enter again.
    menu = "\x1b[19;2H     Use the ^ and v keys to select which entry is highlighted.  \r\n"
    console = ScriptedConsole(menu, menu, menu, "\r\ndebian login: ")
    with ConsoleSession(console, timeout=5) as session:
        session.wait_for_login(timeout=30, nudge=0.5)
    assert console.sent == b"\r" * 4
