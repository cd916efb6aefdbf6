"""Training scenarios: the catalogue parses, breaks reach a disk offline, and the service
keeps attempts (start, hints, checks, reset, stop) over `FakeHypervisor`."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.domain.errors import Conflict, InvalidInput, NotFound
from lab.domain.scenario import (
    AppendFile,
    ChangeMode,
    CheckResult,
    FillDisk,
    KernelArg,
    MakeLink,
    RemovePath,
    ReplaceText,
    WriteFile,
    parse_scenario,
)
from lab.hypervisor.fake import FakeHypervisor
from lab.services.lab import Lab
from lab.services.scenarios import apply_break
from lab.settings import REPO_ROOT, Settings
from lab.storage.diskedit import RootFs, edit_disk
from tests.unit.fakelab import run
from tests.unit.test_diskedit import disk, read_back  # noqa: F401  (the fixture)

MINIMAL = """\
title: T
level: beginner
story: S
objective: O
image: tiny
checks:
  - {name: c, command: "true"}
hints: [first, second]
"""


def test_every_scenario_in_the_repository_parses_and_has_a_solution() -> None:
    found = sorted(p.parent.name for p in (REPO_ROOT / "scenarios").glob("*/scenario.yaml"))
    assert len(found) >= 5
    for name in found:
        text = (REPO_ROOT / "scenarios" / name / "scenario.yaml").read_text()
        scenario = parse_scenario(text, name=name, source=f"{name}/scenario.yaml")
        assert scenario.checks and scenario.hints and scenario.story
        assert scenario.broken_sign, f"{name}: no brokenSign (the scenario tests need it)"
        assert (REPO_ROOT / "scenarios" / name / "solution.py").is_file(), name


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("title: T\n", "level"),
        (MINIMAL.replace("level: beginner", "level: expert"), "level"),
        (MINIMAL + "breaks:\n  - {write: etc/x, content: y}\n", "absolute path"),
        (MINIMAL.replace('"true"}', '"true", expect: "("}'), "regular expression"),
        (MINIMAL + "brokenSign: \"(\"\n", "brokenSign is not a regular expression"),
        ("- just a list\n", "mapping"),
        (MINIMAL + "stuck:\n  '(unclosed': a typo\n", "stuck pattern '(unclosed'"),
        (MINIMAL + "bootTimeoutSeconds: 5\n", "bootTimeoutSeconds"),
        ("name: other\n" + MINIMAL, "differs from the scenario's directory 'bad'"),
    ],
)
def test_bad_scenarios_say_what_and_where(text: str, words: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_scenario(text, name="bad", source="scenarios/bad/scenario.yaml")
    assert "scenarios/bad/scenario.yaml" in err.value.message and words in err.value.message


def test_every_kind_of_break_reaches_the_disk(disk: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "broken.qcow2"

    def edit(fs: RootFs) -> None:
        for step in [
            WriteFile(write="/etc/new", content="n\n"),
            AppendFile(append="/etc/fstab", content="tmpfs /mnt tmpfs defualts 0 0\n"),
            ReplaceText(replace="/etc/motd", old="hello", new="bye"),
            ChangeMode(chmod="/etc/new", mode="0600"),
            MakeLink(symlink="/etc/link", target="/dev/null"),
            RemovePath(remove="/etc/link"),
            FillDisk(fill="/var-fill", leave_mib=1),
        ]:
            apply_break(fs, step)
        with pytest.raises(InvalidInput, match="is not in the file"):
            apply_break(fs, ReplaceText(replace="/etc/motd", old="absent", new="x"))

    edit_disk(disk, out, edit)
    assert read_back(out, tmp_path, "/etc/new") == (b"n\n", 0o100600)
    assert read_back(out, tmp_path, "/etc/fstab")[0].endswith(b"defualts 0 0\n")
    assert read_back(out, tmp_path, "/etc/motd")[0] == b"bye\n"


def test_kernel_arg_goes_on_every_linux_line(disk: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "k.qcow2"
    grub = "menuentry 'Debian' {\n\tlinux /vmlinuz root=UUID=x ro quiet\n\tinitrd /initrd\n}\n"

    def edit(fs: RootFs) -> None:
        # /boot/grub/grub.cfg needs its directories; debugfs makes them with mkdir.
        fs._debugfs(["mkdir /boot", "mkdir /boot/grub"])
        fs.write("/boot/grub/grub.cfg", grub.encode())
        apply_break(fs, KernelArg(kernel_arg="systemd.unit=rescue.target"))

    edit_disk(disk, out, edit)
    cfg = read_back(out, tmp_path, "/boot/grub/grub.cfg")[0].decode()
    assert "\tlinux /vmlinuz root=UUID=x ro quiet systemd.unit=rescue.target\n" in cfg
    assert "\tinitrd /initrd\n" in cfg


@pytest.fixture
def scenario_lab(settings: Settings, hv: FakeHypervisor, tmp_path: Path) -> Lab:
    root = tmp_path / "scenarios" / "demo"
    root.mkdir(parents=True)
    (root / "scenario.yaml").write_text(MINIMAL)
    return Lab(settings.model_copy(update={"scenarios_dir": tmp_path / "scenarios"}), hv)


def test_attempts_are_kept_start_hints_checks_reset_stop(scenario_lab: Lab) -> None:
    lab = scenario_lab

    async def go() -> None:
        assert [s.name for s in lab.scenarios.catalogue()] == ["demo"]
        with pytest.raises(Conflict):
            lab.scenarios.hint("demo")  # never started
        view = await lab.scenarios.start("demo")
        assert (view.identity.resource_group, view.identity.name) == ("scenarios", "demo")
        assert view.model.image == "scn-demo" and view.model.boot_diagnostics.enabled
        with pytest.raises(Conflict, match="already started"):
            await lab.scenarios.start("demo")
        assert lab.scenarios.hint("demo")[:2] == (1, 2)
        assert lab.scenarios.hint("demo") == (2, 2, "second")
        assert lab.scenarios.hint("demo") == (2, 2, "second")  # the last one again
        failed = lab.scenarios.record_checks("demo", [CheckResult("c", False, "no")])
        assert "solvedAt" not in failed
        solved = lab.scenarios.record_checks("demo", [CheckResult("c", True, "yes")])
        assert solved["checkRuns"] == 2 and solved["seconds"] >= 0
        await lab.scenarios.reset("demo")
        assert lab.scenarios.status("demo")["attempt"]["resets"] == 1
        await lab.scenarios.stop("demo")
        assert lab.scenarios.vm("demo") is None
        with pytest.raises(NotFound):
            lab.scenarios.get("nosuch")
        assert [a["scenario"] for a in lab.scenarios.attempts()] == ["demo"]

    run(lab, go)
