"""`lab class ...`: a classroom on one lab. `create` makes the trainees (and instructors) as lab
users and prints the sign-in sheet once; `show` is the instructor's table in a terminal; `rm`
removes everything the class made and keeps the results in a file."""

from __future__ import annotations

import csv
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from lab.cli import output
from lab.cli.common import client, handle_errors
from lab.domain.classroom import parse_roster
from lab.domain.errors import InvalidInput, LabFileUnreadable


@click.group("class")
def classroom() -> None:
    """Classes: trainees with their own scenario VMs, and instructors who follow them."""


@classroom.command("create")
@click.argument("name")
@click.option("--trainees", type=click.IntRange(1, 200), default=None,
              help="Make N trainees: NAME-01 ... NAME-N.")  # fmt: skip
@click.option("--roster", type=click.Path(dir_okay=False), default=None,
              help="A CSV (username[,role][,password]) or YAML (trainees:, instructors:) "
                   "roster instead.")  # fmt: skip
@click.option("--instructor", "instructors", multiple=True,
              help="An instructor's username (made if new); repeatable.")  # fmt: skip
@click.option("--sheet", type=click.Path(dir_okay=False), default=None,
              help="Also write the sign-in sheet (username, role, password) to this CSV file "
                   "(0600).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def create(name: str, trainees: int | None, roster: str | None, instructors: tuple[str, ...],
           sheet: str | None, as_json: bool) -> None:  # fmt: skip
    """Make class NAME: its users, each trainee scoped to a resource group of their own."""
    if (trainees is None) == (roster is None):
        raise click.UsageError("give --trainees N or --roster FILE (one of them)")
    body: dict[str, Any] = {"name": name, "instructors": list(instructors)}
    if roster is not None:
        try:
            text = Path(roster).read_text()
        except OSError as exc:
            raise LabFileUnreadable(f"{roster}: cannot read the roster: {exc.strerror}",
                                    target=roster) from None  # fmt: skip
        body["roster"] = [e.model_dump() for e in parse_roster(text, roster)]
    else:
        body["trainees"] = trainees
    made = client().json("POST", "/v1/classes", json=body)
    if sheet:
        _write_sheet(Path(sheet), made["sheet"])
    if as_json:
        output.print_json(made)
        return
    table = Table("username", "role", "password", title=f"class {name}: sign-in sheet",
                  box=None)  # fmt: skip
    for row in made["sheet"]:
        table.add_row(row["username"], row["role"], row["password"])
    output.out.print(table)
    output.out.print(f"{len(made['trainees'])} trainee(s), each Contributor in a resource group "
                     "of their own name. The passwords are shown only now"
                     f"{f' (and in {sheet})' if sheet else ''}; each made one signs in once, "
                     "to choose one's own (in the portal).", highlight=False)  # fmt: skip


def _write_sheet(path: Path, rows: list[dict[str, str]]) -> None:
    try:
        path.touch(mode=0o600, exist_ok=True)
        path.chmod(0o600)
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["username", "role", "password"])
            writer.writeheader()
            writer.writerows(rows)
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot write the sign-in sheet: {exc.strerror}; the class "
                           "is made, `lab user passwd` sets new passwords",
                           target=str(path)) from None  # fmt: skip


@classroom.command("ls")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def ls(as_json: bool) -> None:
    rows = client().json("GET", "/v1/classes")
    if as_json:
        output.print_json(rows)
        return
    table = Table("class", "trainees", "instructors", "created", box=None)
    for r in rows:
        created = datetime.fromtimestamp(r["createdAt"], UTC).strftime("%Y-%m-%d %H:%M")
        table.add_row(r["name"], str(len(r["trainees"])), ", ".join(r["instructors"]), created)
    output.out.print(table)


@classroom.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def show(name: str, as_json: bool) -> None:
    """Every trainee's attempts: state, time, hints, resets, last check."""
    got = client().json("GET", f"/v1/classes/{name}")
    if as_json:
        output.print_json(got)
        return
    table = Table("trainee", "scenario", "state", "elapsed", "hints", "resets", "last check",
                  title=f"class {name}", box=None)  # fmt: skip
    for r in got["results"]:
        elapsed = r.get("elapsedSeconds")
        state = r["state"]
        if r.get("queuePosition"):
            wait = r["queueEstimateSeconds"]
            state += (f" (#{r['queuePosition']}, waiting for memory)" if wait is None
                      else f" (#{r['queuePosition']}, ~{wait:.0f} s)")  # fmt: skip
        table.add_row(r["trainee"], r.get("scenario") or "-", state,
                      f"{elapsed / 60:.1f} min" if elapsed is not None else "-",
                      str(r.get("hintsUsed", "-")), str(r.get("resets", "-")),
                      r.get("lastCheck") or "-")  # fmt: skip
    output.out.print(table)


@classroom.command("rm")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask first (scripts).")
@handle_errors
def rm(name: str, yes: bool) -> None:
    """End class NAME: delete its VMs, disks, users and role assignments; keep the results."""
    c = client()
    if not yes:
        got = c.json("GET", f"/v1/classes/{name}")
        if not sys.stdin.isatty():
            raise click.UsageError(f"removing class {name} deletes {len(got['trainees'])} "
                                   "trainee(s) and their VMs; confirm with --yes when not at "
                                   "a terminal")  # fmt: skip
        click.confirm(f"End class {name}: delete its {len(got['trainees'])} trainee(s), their "
                      "VMs and disks (the results are kept)?", abort=True)  # fmt: skip
    gone = c.json("DELETE", f"/v1/classes/{name}", timeout=600)
    output.out.print(f"class {name} ended: {gone['vmsDeleted']} VM(s) deleted, "
                     f"{gone['usersRemoved']} user(s) removed; results in {gone['results']} "
                     f"and {gone['resultsCsv']}", highlight=False)  # fmt: skip
