"""Running a training scenario's checks in the real guest, over its serial console: log in as
the scenario's user, run each check's command as root (through `sudo -n`), and compare what it
printed and its exit status with what the check expects."""

from __future__ import annotations

import re
import shlex

from pexpect import TIMEOUT

from lab.console.session import ConsoleClosed, ConsoleSession
from lab.domain.scenario import CheckResult, Scenario


def run_checks(session: ConsoleSession, scenario: Scenario, *,
               boot_timeout: float = 240) -> list[CheckResult]:  # fmt: skip
    """Every check's result; if the guest cannot be logged into (no prompt, wrong password),
    every check fails with that reason, which is usually the very thing to fix."""
    login = scenario.login
    try:
        session.login(login.user, login.password, timeout=boot_timeout)
    except (TIMEOUT, PermissionError, ConsoleClosed) as exc:
        why = f"could not log in as {login.user} on the serial console: {exc}"
        return [CheckResult(c.name, False, why) for c in scenario.checks]
    results = []
    for check in scenario.checks:
        command = (
            check.command
            if login.user == "root"
            else (f"sudo -n sh -c {shlex.quote(check.command)}")
        )
        try:
            output, status = session.run(command, timeout=90)
        except TIMEOUT:
            results.append(CheckResult(check.name, False, "no answer in 90 s"))
            session.sendcontrol("c")
            continue
        matched = re.search(check.expect, output, re.MULTILINE) is not None
        passed = matched and status == check.status
        saw = f"exit status {status}: {output.strip()[-300:] or '(no output)'}"
        results.append(CheckResult(check.name, passed, saw))
    session.sendline("exit")
    return results
