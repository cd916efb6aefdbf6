"""Broken-boot training scenarios: what `scenarios/<name>/scenario.yaml` holds.

A scenario names an image, the **breaks** applied offline to the VM's disk before its first
boot (file edits, removals, modes, links, a full disk, a kernel parameter in GRUB's config),
the story a trainee reads, the objective, graded hints, a time limit, and the **checks** that
decide success by running commands in the real guest over its serial console.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)
from pydantic.alias_generators import to_camel
from yaml.nodes import ScalarNode

from lab.domain.errors import ScenarioFileError
from lab.domain.vm import HyperVGeneration
from lab.domain.yamldoc import NULL_TAG, Builder, FieldPath, compose, describe, format_path

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


#: A break's kind is the key that names what it edits (`write: /etc/fstab`), so a bad break is
#: reported against that kind alone, not against all eight.
_BREAK_KINDS: dict[str, type[_Model]] = {
    "write": WriteFile, "append": AppendFile, "replace": ReplaceText, "remove": RemovePath,
    "chmod": ChangeMode, "symlink": MakeLink, "fill": FillDisk, "kernelArg": KernelArg,
    "kernel_arg": KernelArg,
}  # fmt: skip
_BREAK_TAGS = frozenset(kind.__name__ for kind in _BREAK_KINDS.values())


def _break_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        return next((k.__name__ for key, k in _BREAK_KINDS.items() if key in value), None)
    return type(value).__name__ if type(value).__name__ in _BREAK_TAGS else None


Break = Annotated[
    Annotated[WriteFile, Tag("WriteFile")] | Annotated[AppendFile, Tag("AppendFile")]
    | Annotated[ReplaceText, Tag("ReplaceText")] | Annotated[RemovePath, Tag("RemovePath")]
    | Annotated[ChangeMode, Tag("ChangeMode")] | Annotated[MakeLink, Tag("MakeLink")]
    | Annotated[FillDisk, Tag("FillDisk")] | Annotated[KernelArg, Tag("KernelArg")],
    Discriminator(_break_kind, custom_error_type="break_kind",
                  custom_error_message="a break is a mapping with one of the keys write, append, "
                  "replace, remove, chmod, symlink, fill or kernelArg"),
]  # fmt: skip


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
    #: False: run as the logged-in user instead (images without sudo, such as `tiny`).
    as_root: bool = True

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

    def reset_password(self, user: str, password: str) -> None:
        """Azure's "Reset password" (the VM access extension, `az vm user update`): through
        the guest agent, so it fails while the agent does not answer."""
        ...


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
    #: V2: the VM boots through UEFI (OVMF), for breaks of the EFI boot path.
    hyper_v_generation: HyperVGeneration = "V1"
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
    #: What the broken guest shows, as the scenario means it to be broken (a regular
    #: expression): matched against its serial log since the boot and what its failed checks
    #: saw (the engine's stuck reason, or a check command's output). A guest that failed the
    #: checks for another reason (it never booted, a login failed) does not show it. The
    #: scenario tests require one of every scenario in the repository.
    broken_sign: str | None = None
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

    @field_validator("broken_sign")
    @classmethod
    def _broken_sign(cls, value: str | None) -> str | None:
        return None if value is None else _regex(value, "brokenSign")

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
    """A scenario from its YAML; every problem is a `ScenarioFileError` naming the file, the
    line and the field (the first problem's; the message lists up to five)."""
    root = compose(text, source, ScenarioFileError)
    if root is None or (isinstance(root, ScalarNode) and root.tag == NULL_TAG and not root.value):
        raise ScenarioFileError("the file is empty; a scenario is a mapping (title, level, "
                                "story, ...)", source=source, line=1, field=None)  # fmt: skip
    builder = Builder(source, ScenarioFileError)
    builder.lines[()] = root.start_mark.line + 1
    data = builder.build(root, (), 0)
    if not isinstance(data, dict):
        raise ScenarioFileError(
            f"a scenario is a mapping (title, level, story, ...), but YAML reads it as "
            f"{describe(data)}", source=source, line=root.start_mark.line + 1, field=None,
        )  # fmt: skip
    if "name" in data and data["name"] != name:
        raise ScenarioFileError(
            f"name: '{data['name']}' differs from the scenario's directory '{name}'; the "
            "directory names the scenario (leave `name` out)", source=source,
            line=builder.lines.get(("name",), 1), field="name")  # fmt: skip
    try:
        return Scenario.model_validate({**data, "name": name})
    except ValidationError as exc:
        raise _located(exc, source, builder.lines) from None


def _located(exc: ValidationError, source: str, lines: dict[FieldPath, int]) -> ScenarioFileError:
    problems: list[tuple[int, str, str]] = []
    for err in exc.errors(include_url=False):
        path = tuple(p for p in err["loc"] if p not in _BREAK_TAGS and p != "[key]")
        line = next((lines[path[:end]] for end in range(len(path), -1, -1)
                     if path[:end] in lines), 1)  # fmt: skip
        problem = (line, format_path(path), _message(err["type"], str(err["msg"]), path))
        if problem not in problems:
            problems.append(problem)
    problems.sort(key=lambda p: p[0])
    (line, field, message), rest = problems[0], problems[1:5]
    for other_line, other_field, other in rest:
        message += f"\n{source}:{other_line}: {other_field + ': ' if other_field else ''}{other}"
    if len(problems) > 5:
        message += f"\n... and {len(problems) - 5} more"
    return ScenarioFileError(message, source=source, line=line, field=field or None)


def _message(kind: str, msg: str, path: tuple[str | int, ...]) -> str:
    key = path[-1] if path else None
    if kind == "missing" and isinstance(key, str):
        return f"required field '{key}' is missing"
    if kind == "extra_forbidden" and isinstance(key, str):
        close = difflib.get_close_matches(key, _ALL_KEYS, n=1)
        return f"unknown field '{key}'" + (f" (did you mean '{close[0]}'?)" if close else "")
    return msg.removeprefix("Value error, ")


def _aliases(model: type[BaseModel]) -> set[str]:
    return {info.alias or name for name, info in model.model_fields.items()}


_MODELS: tuple[type[BaseModel], ...] = (Scenario, Check, Login, *_BREAK_KINDS.values())
_ALL_KEYS = sorted(set().union(*(_aliases(m) for m in _MODELS)))
