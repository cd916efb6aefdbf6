"""Broken-boot training scenarios: what `scenarios/<name>/scenario.yaml` holds.

A scenario names an image, the **breaks** applied offline to the VM's disk before its first
boot (file edits, removals, modes, links, a full disk, a kernel parameter in GRUB's config),
the story a trainee reads, the objective, graded hints, a time limit, and the **checks** that
decide success by running commands in the real guest over its serial console.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

from lab.domain.errors import InvalidInput

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{1,40}")


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid",
                              frozen=True)  # fmt: skip


def _guest_path(value: str) -> str:
    if not value.startswith("/") or "\x00" in value or "/../" in f"{value}/":
        raise ValueError(f"'{value}' must be an absolute path in the guest, without '..'")
    return value


GuestPath = Annotated[str, Field(description="an absolute path in the guest")]


class WriteFile(_Model):
    """Create or replace a file."""

    write: GuestPath
    content: str
    mode: str = "0644"
    _check = field_validator("write")(_guest_path)


class AppendFile(_Model):
    append: GuestPath
    content: str
    _check = field_validator("append")(_guest_path)


class ReplaceText(_Model):
    """Replace every occurrence of `old` by `new` in a file; `old` must be there."""

    replace: GuestPath
    old: str
    new: str
    _check = field_validator("replace")(_guest_path)


class RemovePath(_Model):
    remove: GuestPath
    _check = field_validator("remove")(_guest_path)


class ChangeMode(_Model):
    chmod: GuestPath
    mode: str = Field(pattern=r"^0?[0-7]{3,4}$")
    _check = field_validator("chmod")(_guest_path)


class MakeLink(_Model):
    symlink: GuestPath
    target: str
    _check = field_validator("symlink")(_guest_path)


class FillDisk(_Model):
    """A file that takes the root filesystem's free space, but `leave_mib`."""

    fill: GuestPath
    leave_mib: int = Field(default=0, ge=0)
    _check = field_validator("fill")(_guest_path)


class KernelArg(_Model):
    """A kernel parameter added to every `linux` line of GRUB's config."""

    kernel_arg: str = Field(min_length=1, pattern=r"^[^\n'\"]+$")


Break = (
    WriteFile | AppendFile | ReplaceText | RemovePath | ChangeMode | MakeLink | FillDisk | KernelArg
)


def _regex(value: str, what: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"{what} is not a regular expression: {exc}") from exc
    return value


class Check(_Model):
    """A command run as root (through sudo) in the guest; it passes when its output matches
    `expect` (a regular expression) and its exit status is `status`."""

    name: str = Field(min_length=1)
    command: str = Field(min_length=1)
    expect: str = ""
    status: int = 0

    @field_validator("expect")
    @classmethod
    def _expect(cls, value: str) -> str:
        return _regex(value, "expect")


class VmControls(Protocol):
    """What a reference solution may do to its VM besides typing on the console: what a
    trainee does from the console's menu or the portal's buttons."""

    def reset(self) -> None: ...

    def sysrq(self, keys: str) -> None: ...

    def nmi(self) -> None: ...


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    #: What the check saw (the command's output and status, or why it could not run).
    saw: str


class Login(_Model):
    """Who the checks log in as (after the fix: a scenario may change the password)."""

    user: str = "azureuser"
    password: str = "Passw0rd!"


class Scenario(_Model):
    name: str
    title: str = Field(min_length=1)
    level: Literal["beginner", "intermediate", "advanced"]
    story: str = Field(min_length=1)
    objective: str = Field(min_length=1)
    image: str = "debian"
    breaks: list[Break] = Field(default_factory=list)
    checks: list[Check] = Field(min_length=1)
    hints: list[str] = Field(default_factory=list)
    time_limit_minutes: int = Field(default=30, ge=1, le=240)
    #: The account the VM is created with, and the one the checks log in as.
    admin: Login = Field(default_factory=Login)
    check_login: Login | None = None
    #: Console text (a regular expression) that shows the broken guest will not give a login
    #: prompt, and what it means: the checks then fail at once with that reason, instead of
    #: waiting for a prompt that never comes (the engine knows panics, emergency mode, ...).
    stuck: dict[str, str] = Field(default_factory=dict)
    #: How long the checks wait for a login prompt. A scenario whose broken guest shows no
    #: sign of being stuck (no getty at all) sets a shorter one, so a check fails sooner.
    boot_timeout_seconds: int = Field(default=240, ge=30, le=1800)
    #: Extra kernel parameters are breaks; this is the VM's size.
    vcpus: int = Field(default=2, ge=1, le=8)
    memory_mib: int = Field(default=1024, ge=256, le=8192)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(f"scenario name '{value}' must be 2-41 lower-case letters, digits "
                             "and '-', starting with a letter or digit")  # fmt: skip
        return value

    @field_validator("stuck")
    @classmethod
    def _stuck(cls, value: dict[str, str]) -> dict[str, str]:
        for pattern in value:
            _regex(pattern, f"stuck pattern '{pattern}'")
        return value

    @property
    def login(self) -> Login:
        return self.check_login or self.admin


def parse_scenario(text: str, *, name: str, source: str) -> Scenario:
    """A scenario from its YAML; every problem is an InvalidInput naming file and field."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{source}: not valid YAML: {exc}", target=source) from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{source}: a scenario is a mapping (title, level, story, ...)",
                           target=source)  # fmt: skip
    try:
        return Scenario.model_validate({"name": name, **data})
    except ValidationError as exc:
        problems = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
            problems.append(f"{where}: {err['msg']}")
        raise InvalidInput(f"{source}: " + "; ".join(problems), target=source) from None
