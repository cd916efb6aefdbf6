"""A class: trainees who each work on their own copies of the scenarios, and instructors who
follow them. Pure: the roster's parsing, the names, and the results table.

Each trainee is a lab user scoped to a resource group of their own, named as the user
(`cls-07` works in resource group `cls-07`, their scenario VMs are `cls-07/<scenario>`):
Contributor there and nothing elsewhere. Instructors are users too; what they may do to the
class (watch any trainee's console read-only, reset a trainee's VM, end the class) comes from
the class record naming them, not from an Azure role, since Azure has no such role.
"""

from __future__ import annotations

import csv
import io
import re
import secrets
from typing import Any

from pydantic import BaseModel, ConfigDict

from lab.domain.errors import InvalidInput, LabFileError
from lab.domain.labfile import DEFAULT_SUBSCRIPTION_ID
from lab.domain.resource_ids import vm_id
from lab.domain.yamldoc import Builder, compose

#: A trainee's name is also a resource group's, so the letters a group allows (no `@`).
_TRAINEE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_CLASS = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
#: Letters for initial passwords: none that are confused on a printed sheet (0/O, 1/l/I).
_PASSWORD_LETTERS = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
MAX_TRAINEES = 200


class Classroom(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    created_at: float
    trainees: tuple[str, ...]
    instructors: tuple[str, ...] = ()
    #: Instructors this class made (and so removes with it); the others existed before.
    made_instructors: tuple[str, ...] = ()

    def has_trainee(self, username: str) -> bool:
        return username.lower() in {t.lower() for t in self.trainees}

    def has_instructor(self, username: str) -> bool:
        return username.lower() in {i.lower() for i in self.instructors}


class RosterEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    username: str
    role: str = "trainee"  # or "instructor"
    #: None: the lab makes one and prints it once.
    password: str | None = None


def check_class_name(name: str) -> None:
    if not _CLASS.match(name):
        raise InvalidInput(f"invalid class name {name!r}: 1-31 lowercase letters, digits or "
                           "'-', starting with a letter or digit", target="name")  # fmt: skip


def trainee_group(username: str) -> str:
    """The resource group a trainee works in: their own name."""
    return username.lower()


def group_scope(group: str) -> str:
    return f"/subscriptions/{DEFAULT_SUBSCRIPTION_ID}/resourceGroups/{group}"


def scenario_vm_id(group: str, name: str) -> str:
    """The resource id of scenario `name`'s VM in `group` (a trainee's, or `scenarios`)."""
    return vm_id(DEFAULT_SUBSCRIPTION_ID, group, name)


def numbered_trainees(class_name: str, count: int) -> list[RosterEntry]:
    """`--trainees N`: `<class>-01` ... `<class>-NN`."""
    if not 1 <= count <= MAX_TRAINEES:
        raise InvalidInput(f"--trainees is 1-{MAX_TRAINEES}, not {count}", target="trainees")
    width = max(2, len(str(count)))
    return [RosterEntry(username=f"{class_name}-{n:0{width}d}") for n in range(1, count + 1)]


def new_password() -> str:
    """An initial password to hand out on paper: 12 letters and digits, none look-alike."""
    return "".join(secrets.choice(_PASSWORD_LETTERS) for _ in range(12))


def parse_roster(text: str, source: str) -> list[RosterEntry]:
    """A roster file: CSV with a header (`username`, optional `role` and `password`), or YAML
    (`trainees:` and `instructors:`, each a list of usernames or {username, password})."""
    stripped = text.lstrip()
    if source.endswith((".yaml", ".yml")) or stripped.startswith(("trainees:", "instructors:")):
        entries = _roster_yaml(text, source)
    else:
        entries = _roster_csv(text, source)
    if not any(e.role == "trainee" for e in entries):
        raise InvalidInput(f"{source}: the roster names no trainee", target=source)
    return check_roster(entries, source)


def check_roster(entries: list[RosterEntry], source: str) -> list[RosterEntry]:
    seen: set[str] = set()
    for e in entries:
        if not _TRAINEE.match(e.username):
            raise InvalidInput(f"{source}: invalid username {e.username!r}: 1-64 letters, "
                               "digits, '.', '_' or '-' (a trainee's name is also their "
                               "resource group's)", target=source)  # fmt: skip
        if e.username.lower() in seen:
            raise InvalidInput(f"{source}: {e.username!r} is listed twice", target=source)
        seen.add(e.username.lower())
        if e.password is not None and len(e.password) < 8:
            raise InvalidInput(f"{source}: the password of {e.username!r} has fewer than 8 "
                               "characters", target=source)  # fmt: skip
    if len(entries) > MAX_TRAINEES:
        raise InvalidInput(f"{source}: {len(entries)} people, over {MAX_TRAINEES}",
                           target=source)  # fmt: skip
    return entries


def _roster_csv(text: str, source: str) -> list[RosterEntry]:
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or [c.strip().lower() for c in rows[0]][:1] != ["username"]:
        raise InvalidInput(f"{source}:1: a CSV roster starts with a header line "
                           "`username[,role][,password]`", target=source)  # fmt: skip
    header = [c.strip().lower() for c in rows[0]]
    unknown = set(header) - {"username", "role", "password"}
    if unknown:
        raise InvalidInput(f"{source}:1: unknown column(s) {', '.join(sorted(unknown))}; the "
                           "columns are username, role, password", target=source)  # fmt: skip
    entries = []
    for number, row in enumerate(rows[1:], 2):
        if not any(c.strip() for c in row):
            continue
        if len(row) > len(header):
            raise InvalidInput(f"{source}:{number}: {len(row)} fields, the header has "
                               f"{len(header)}", target=source)  # fmt: skip
        fields = {h: c.strip() for h, c in zip(header, row, strict=False)}
        role = (fields.get("role") or "trainee").lower()
        if role not in ("trainee", "instructor"):
            raise InvalidInput(f"{source}:{number}: role {role!r} is trainee or instructor",
                               target=source)  # fmt: skip
        entries.append(RosterEntry(username=fields.get("username", ""), role=role,
                                   password=fields.get("password") or None))  # fmt: skip
    return entries


def _roster_yaml(text: str, source: str) -> list[RosterEntry]:
    # The lab file's YAML reader: its size limits, and errors that say the line.
    root = compose(text, source, LabFileError)
    doc = None if root is None else Builder(source, LabFileError).build(root, (), 0)
    if not isinstance(doc, dict) or set(doc) - {"trainees", "instructors"}:
        raise InvalidInput(f"{source}: a YAML roster has `trainees:` and optionally "
                           "`instructors:`, each a list", target=source)  # fmt: skip
    entries = []
    for key, role in (("trainees", "trainee"), ("instructors", "instructor")):
        items = doc.get(key) or []
        if not isinstance(items, list):
            raise InvalidInput(f"{source}: `{key}` is a list", target=source)
        for item in items:
            if isinstance(item, str):
                entries.append(RosterEntry(username=item, role=role))
            elif isinstance(item, dict) and isinstance(item.get("username"), str):
                password = item.get("password")
                entries.append(RosterEntry(username=item["username"], role=role,
                                           password=None if password is None else str(password)))
            else:
                raise InvalidInput(f"{source}: `{key}` entry {item!r} is a username or "
                                   "{username, password}", target=source)  # fmt: skip
    return entries


#: The results table's columns, in the order of the CSV export.
RESULT_COLUMNS = ("trainee", "scenario", "state", "startedAt", "elapsedSeconds", "hintsUsed",
                  "resets", "checkRuns", "lastCheck", "solvedAt", "solvedSeconds")  # fmt: skip


def result_row(trainee: str, group: str, attempt: dict[str, Any], *, state: str,
               now: float) -> dict[str, Any]:  # fmt: skip
    """One trainee's attempt at one scenario, as the instructor's table shows it."""
    checks = attempt.get("checks")
    last = None
    if checks is not None:
        last = f"{sum(bool(c.get('passed')) for c in checks)}/{len(checks)} passed"
    end = attempt.get("solvedAt") or attempt.get("stoppedAt") or now
    return {
        "trainee": trainee, "group": group, "scenario": attempt["scenario"], "state": state,
        "startedAt": attempt.get("startedAt"),
        "elapsedSeconds": round(end - attempt["startedAt"], 1) if attempt.get("startedAt")
        else None,
        "hintsUsed": attempt.get("hintsUsed", 0), "resets": attempt.get("resets", 0),
        "checkRuns": attempt.get("checkRuns", 0), "lastCheck": last,
        "solvedAt": attempt.get("solvedAt"), "solvedSeconds": attempt.get("seconds"),
    }  # fmt: skip


def results_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=RESULT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in RESULT_COLUMNS})
    return out.getvalue()
