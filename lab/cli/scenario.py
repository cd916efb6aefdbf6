"""`lab scenario ...`: broken-boot training. Start a scenario (its VM boots broken), fix it
through the serial console, ask for hints, and let `check` decide, in the real guest."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import click
from rich.table import Table

from lab.cli import output
from lab.cli.common import build_image, client, handle_errors
from lab.client.checks import CHECK_SECONDS
from lab.domain.scenario import Scenario
from lab.settings import get_settings


@click.group()
def scenario() -> None:
    """Broken-boot training scenarios (scenarios/<name>/scenario.yaml)."""


#: `--user U`: trainee U's own copy of the scenario (in their resource group), not the lab's.
user_option = click.option("--user", "user", default=None, metavar="USER",
                           help="Work on trainee USER's copy (in their resource group).")


def _who(user: str | None, **params: Any) -> dict[str, Any]:
    return {**({"user": user} if user else {}), **params}


@scenario.command("ls")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def ls(as_json: bool) -> None:
    """The scenarios, with their level and whether they are started."""
    rows = client().json("GET", "/v1/scenarios")
    if as_json:
        output.print_json(rows)
        return
    table = Table("scenario", "level", "minutes", "started", "title", box=None)
    for r in rows:
        table.add_row(r["name"], r["level"], str(r["timeLimitMinutes"]),
                      "yes" if r["started"] else "", r["title"])  # fmt: skip
    output.out.print(table)


@scenario.command()
@click.argument("name")
@click.option("--console/--no-console", "open_console", default=False,
              help="Open the serial console once the VM is booting.")  # fmt: skip
@click.option("--vcpus", type=click.IntRange(1, 8), default=None,
              help="vCPUs of the VM (default: the scenario's own, usually 2).")  # fmt: skip
@user_option
@handle_errors
def start(name: str, open_console: bool, vcpus: int | None, user: str | None) -> None:
    """Create the scenario's VM with its breaks applied, boot it, and show the ticket."""
    c = client()
    defn = Scenario.model_validate(c.json("GET", f"/v1/scenarios/{name}/definition"))
    build_image(get_settings(), defn.image)
    params = _who(user, **({} if vcpus is None else {"vcpus": vcpus}))
    # A full lab queues the start (capacity admission): wait as long as the queue takes.
    vm = c.json("POST", f"/v1/scenarios/{name}/start", params=params, timeout=3600)
    group = vm["resourceGroup"]
    also = f" --user {user}" if user else ""
    output.out.print(
        f"[bold]{defn.title}[/bold] ({defn.level}, {defn.time_limit_minutes} min)\n\n"
        f"{defn.story.strip()}\n\n[bold]Objective:[/bold] {defn.objective.strip()}\n\n"
        f"VM {vm['name']} (resource group {group}) is booting. Console: "
        f"`lab console {name} -g {group}`; hints: `lab scenario hint {name}{also}`; "
        f"when done: `lab scenario check {name}{also}`.",
        highlight=False,
    )
    if open_console:
        from lab.cli.diagnostics import console

        console.callback(name, group, None, False, None)  # type: ignore[misc]


@scenario.command()
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True)
@user_option
@handle_errors
def status(name: str | None, as_json: bool, user: str | None) -> None:
    """Where a scenario stands (or every started one)."""
    c = client()
    params = _who(user)
    names = [name] if name else [r["name"] for r in c.json("GET", "/v1/scenarios", params=params)
                                 if r["started"]]  # fmt: skip
    states = [c.json("GET", f"/v1/scenarios/{n}", params=params) for n in names]
    if as_json:
        output.print_json(states)
        return
    for s in states:
        attempt = s.get("attempt") or {}
        elapsed = ""
        if attempt.get("startedAt"):
            elapsed = f", {(datetime.now(UTC).timestamp() - attempt['startedAt']) / 60:.0f} min in"
        solved = "solved" if attempt.get("solvedAt") else "not solved yet"
        output.out.print(f"{s['name']}: VM {s['vm'] or 'not started'}; {solved}{elapsed}; "
                         f"hints used {attempt.get('hintsUsed', 0)} of {s['hints']}\n"
                         f"  objective: {s['objective'].strip()}", highlight=False)  # fmt: skip


@scenario.command()
@click.argument("name")
@user_option
@handle_errors
def hint(name: str, user: str | None) -> None:
    """Reveal the next hint."""
    h = client().json("POST", f"/v1/scenarios/{name}/hint", params=_who(user))
    output.out.print(f"hint {h['number']} of {h['of']}: {h['hint']}", highlight=False)


@scenario.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.option("--boot-timeout", type=float, default=None,
              help="How long to wait for a login prompt [default: the scenario's, 240 s "
                   "for most].")  # fmt: skip
@user_option
@handle_errors
def check(name: str, as_json: bool, boot_timeout: float | None, user: str | None) -> None:
    """Run the scenario's checks in the guest, over its serial console."""
    c = client()
    defn = Scenario.model_validate(c.json("GET", f"/v1/scenarios/{name}/definition"))
    wait = defn.boot_timeout_seconds if boot_timeout is None else boot_timeout
    params = _who(user, **({} if boot_timeout is None else {"bootTimeout": boot_timeout}))
    # The daemon runs them (over the VM's console broker): up to the boot wait, then each check.
    body = c.json("POST", f"/v1/scenarios/{name}/check", params=params,
                  timeout=wait + CHECK_SECONDS * len(defn.checks) + 60)  # fmt: skip
    results, attempt = body["results"], body["attempt"]
    passed = bool(body["passed"])
    if as_json:
        output.print_json(body)
    else:
        for r in results:
            mark = "[green]PASS[/green]" if r["passed"] else "[red]FAIL[/red]"
            output.out.print(f"{mark} {r['name']}\n     saw: {r['saw']}")
        seconds = attempt.get("seconds")
        if passed:
            output.out.print(f"Solved{f' in {seconds / 60:.1f} min' if seconds else ''}, with "
                             f"{attempt.get('hintsUsed', 0)} hint(s).")  # fmt: skip
    if not passed:
        raise SystemExit(1)


@scenario.command()
@click.argument("name")
@user_option
@handle_errors
def reset(name: str, user: str | None) -> None:
    """Start over: the VM's disk goes back to the broken state and it boots again."""
    client().json("POST", f"/v1/scenarios/{name}/reset", params=_who(user))
    output.out.print(f"{name}: reset to its broken state and booting.")


@scenario.command()
@click.argument("name")
@user_option
@handle_errors
def stop(name: str, user: str | None) -> None:
    """End the scenario: its VM is deleted (results are kept)."""
    client().json("POST", f"/v1/scenarios/{name}/stop", params=_who(user))
    output.out.print(f"{name}: stopped.")


@scenario.command()
@click.option("--json", "as_json", is_flag=True)
@user_option
@handle_errors
def report(as_json: bool, user: str | None) -> None:
    """Every attempt: time taken, hints used, checks passed."""
    attempts: list[dict[str, Any]] = client().json("GET", "/v1/scenarios/report",
                                                   params=_who(user))  # fmt: skip
    if as_json:
        output.print_json(attempts)
        return
    table = Table("scenario", "started", "solved in", "hints", "resets", "checks", box=None)
    for a in attempts:
        checks = a.get("checks") or []
        started = datetime.fromtimestamp(a["startedAt"], UTC).strftime("%Y-%m-%d %H:%M")
        solved = f"{a['seconds'] / 60:.1f} min" if a.get("seconds") else "-"
        table.add_row(
            a["scenario"],
            started,
            solved,
            str(a.get("hintsUsed", 0)),
            str(a.get("resets", 0)),
            f"{sum(c['passed'] for c in checks)}/{len(checks)}" if checks else "-",
        )
    output.out.print(table)
