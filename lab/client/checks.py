"""Running a training scenario's checks in the real guest, over its serial console: log in as
the scenario's user, run each check's command as root (through `sudo -n`), and compare what it
printed and its exit status with what the check expects."""

from __future__ import annotations

import re
import shlex
import time

from pexpect import TIMEOUT

from lab.client.session import LOGIN_PROMPT, PROMPT, ConsoleClosed, ConsoleSession
from lab.domain.guest_health import BOOT_FINISHED, HANG_LINES, STUCK_SIGNS, hang_meaning
from lab.domain.scenario import CheckResult, Scenario

#: After the debian image's "boot finished" line (`BOOT_FINISHED`) a login prompt comes at once
#: or never (a masked serial getty), so the wait for one ends this much later.
LOGIN_AFTER_BOOT_S = 20.0

#: How long a guest whose kernel printed a hang sign may take to show a login prompt after it
#: anyway: a host that starves a TCG guest of CPU for over 20 s makes its kernel print a soft
#: lockup it then recovers from (the vCPU did not run, so nothing on it could).
HANG_GRACE_S = 60.0

#: How long one check's command may run.
CHECK_SECONDS = 90


def reach_login(session: ConsoleSession, timeout: float, nudge: float = 3.0,
                stuck: dict[str, str] | None = None) -> str | None:  # fmt: skip
    """Press Enter until a `login:` prompt shows (None), or return what the guest is stuck in
    (`stuck`: a scenario's own signs, besides the usual ones). A shell left logged in is logged
    out first. A guest whose kernel says it is hung (`HANG_SIGNS`) gets `HANG_GRACE_S` more to
    show a prompt, then is reported hung rather than merely slow."""
    signs = {**STUCK_SIGNS, **(stuck or {})}
    patterns = [LOGIN_PROMPT, PROMPT, BOOT_FINISHED, *signs, *HANG_LINES]
    deadline = time.monotonic() + timeout
    hung, finished = "", False
    while (left := deadline - time.monotonic()) > 0:
        session.sendline()
        try:
            index = session.expect(patterns, timeout=min(nudge, left))
        except TIMEOUT:
            continue
        if index == 0:
            return None
        if index == 1:
            session.sendline("exit")
            continue
        if index == 2:
            if not finished:
                finished = True
                deadline = min(deadline, time.monotonic() + LOGIN_AFTER_BOOT_S)
            continue
        if index < 3 + len(signs):
            return str(list(signs.values())[index - 3])
        if not hung:
            deadline = min(deadline, time.monotonic() + HANG_GRACE_S)
        hung = str(session.after).strip()
    if hung:
        return f"the guest is hung: {hang_meaning(hung)} ({hung})"
    if finished:
        return ("the boot finished but no login prompt came on the serial console "
                f"in {LOGIN_AFTER_BOOT_S:g} s after it")  # fmt: skip
    return f"no login prompt in {timeout:g} s"


def as_root(command: str, user: str, password: str) -> str:
    """A shell line that runs `command` as root from `user`'s shell: sudo reads the user's
    password from stdin (the lab's admin user needs it, as on Azure with password login)."""
    if user == "root":
        return command
    return f"printf '%s\\n' {shlex.quote(password)} | sudo -S -p '' sh -c {shlex.quote(command)}"


def run_checks(session: ConsoleSession, scenario: Scenario, *,
               boot_timeout: float = 240) -> list[CheckResult]:  # fmt: skip
    """Every check's result; if the guest cannot be logged into (stuck, no prompt, wrong
    password), every check fails with that reason, which is usually the very thing to fix."""
    login = scenario.login
    try:
        stuck = reach_login(session, boot_timeout, stuck=scenario.stuck)
        if stuck is None:
            session.login(login.user, login.password, timeout=30)
    except (TIMEOUT, PermissionError, ConsoleClosed) as exc:
        stuck = str(exc)
    if stuck is not None:
        why = f"could not log in as {login.user} on the serial console: {stuck}"
        return [CheckResult(c.name, False, why) for c in scenario.checks]
    results = []
    for check in scenario.checks:
        command = (as_root(check.command, login.user, login.password) if check.as_root
                   else check.command)  # fmt: skip
        try:
            output, status = session.run(command, timeout=CHECK_SECONDS)
        except TIMEOUT:
            results.append(CheckResult(check.name, False, f"no answer in {CHECK_SECONDS} s"))
            session.sendcontrol("c")
            continue
        output = output.replace("\r", "")  # so `$` in an expectation means the end of a line
        matched = re.search(check.expect, output, re.MULTILINE) is not None
        passed = matched and status == check.status
        saw = f"exit status {status}: {output.strip()[-300:] or '(no output)'}"
        results.append(CheckResult(check.name, passed, saw))
    session.sendline("exit")
    return results
