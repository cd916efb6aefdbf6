"""The lab's state files: written atomically and durably, and a damaged one is reported (the
file, what is wrong, how to recover), never silently replaced by empty state.

Covers `<data dir>/state/resources.json` (storage accounts, the serial console's switch and
ports, scale-set models, scenario attempts, each section checked against its shape), the
caches the lab can compute again (the KVM verdict, a serial log's offset index: a damaged one is
set aside with a warning), and image manifests.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from lab.domain.errors import CorruptState
from lab.domain.scale_set import ScaleSetModel
from lab.domain.storage_account import StorageAccount
from lab.domain.vm import VmModel
from lab.hypervisor import accel
from lab.hypervisor.fake import FakeHypervisor
from lab.services.accel import RECHECK_TIMEOUT_S, choose_accel
from lab.services.lab import Lab
from lab.settings import Settings
from lab.storage import blobs
from lab.storage import state as state_module
from lab.storage.images import ImageCache
from lab.storage.serial_log import RotatingLog
from lab.storage.state import StateFile
from tests.unit.fakelab import PASSWORD, PASSWORD_HASH, SUBSCRIPTION, make_image, run


def _full_state(lab: Lab) -> Path:
    """Every section of resources.json written by its own service; returns the file."""
    lab.storage_accounts.put(StorageAccount(subscription_id=SUBSCRIPTION, resource_group="rg1",
                                            name="diagacct"))  # fmt: skip
    lab.serial_console.set_disabled(SUBSCRIPTION, True)
    vm_id = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg1/providers/Microsoft.Compute/vm/a"
    from lab.domain.serial_console import PortState

    lab.serial_console.put_port(vm_id, "0", PortState.DISABLED)
    profile = VmModel(image="tiny", vcpus=1, memory_mib=256, admin_username="azureuser")
    lab.scale_sets._save(ScaleSetModel(
        subscription_id=SUBSCRIPTION, resource_group="rg1", name="web", unique_id="u-1",
        profile=profile, admin_password_hash=PASSWORD_HASH, capacity=0,
        computer_name_prefix="web",
    ))  # fmt: skip
    lab.scenarios.state.update("scenarioAttempts", [
        {"scenario": "demo", "title": "Demo", "startedAt": 1.5, "hintsUsed": 0, "resets": 0},
    ])  # fmt: skip
    return lab.settings.state_dir / "resources.json"


def _refused(settings: Settings) -> CorruptState:
    with pytest.raises(CorruptState) as info:
        Lab(settings, FakeHypervisor())
    return info.value


def test_everything_the_services_write_reads_back_in_a_new_lab(lab: Lab) -> None:
    path = _full_state(lab)
    again = Lab(lab.settings, FakeHypervisor())
    assert [a.name for a in again.storage_accounts.list()] == ["diagacct"]
    assert again.serial_console.disabled(SUBSCRIPTION)
    assert [m.name for m in again.scale_sets.list()] == ["web"]
    assert [a["scenario"] for a in again.scenarios.attempts()] == ["demo"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # a scale set's password hash is in it


@pytest.mark.parametrize("keep", [0, 1, 10, 0.5, -2, -1])
def test_a_truncated_state_file_is_refused_with_the_file_and_what_is_wrong(
    lab: Lab, keep: float
) -> None:
    path = _full_state(lab)
    whole = path.read_bytes()
    cut = whole[: int(len(whole) * keep)] if isinstance(keep, float) else whole[:keep]
    path.write_bytes(cut)
    error = _refused(lab.settings)
    assert str(path) in error.message and error.code == "CorruptState"
    assert "cut short" in error.message
    # How to recover: the version before the last write is named, and so is what moving the
    # file away would forget.
    assert str(path) + ".prev" in error.message
    assert "storage accounts" in error.message and "scale sets" in error.message
    assert path.read_bytes() == cut  # left as it is: nothing reset, nothing overwritten


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b'{"storageAccounts": {}} trailing', "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[1, 2, 3]", "JSON list where the lab writes an object"),
        (b'"text"', "JSON str"),
        (b"   \n", "is empty"),
    ],
)
def test_a_damaged_state_file_is_refused(settings: Settings, content: bytes, says: str) -> None:
    path = settings.state_dir / "resources.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    error = _refused(settings)
    assert str(path) in error.message and says in error.message, error.message
    assert path.read_bytes() == content


@pytest.mark.parametrize(
    ("key", "value", "where"),
    [
        ("storageAccounts", ["diagacct"], "storageAccounts: Input should be a valid dictionary"),
        ("storageAccounts", {"a": {"name": "a"}}, "storageAccounts.a.subscription_id"),
        ("serialConsoleDisabled", "sub", "serialConsoleDisabled: Input should be a valid list"),
        ("serialPorts", {"/vm": {"0": 1}}, "serialPorts./vm.0: Input should be a valid string"),
        ("scaleSets", {"rg/web": {"name": "web"}}, "scaleSets.rg/web.subscription_id"),
        ("scenarioAttempts", [{"title": "x", "startedAt": 1}], "scenarioAttempts.0.scenario"),
        ("scenarioAttempts", {"demo": {}}, "scenarioAttempts: Input should be a valid list"),
    ],
)
def test_a_section_that_is_not_what_its_service_wrote_is_refused_with_its_path(
    lab: Lab, key: str, value: Any, where: str
) -> None:
    path = _full_state(lab)
    data = json.loads(path.read_text())
    data[key] = value
    path.write_text(json.dumps(data))
    error = _refused(lab.settings)
    assert str(path) in error.message and where in error.message, error.message


def test_the_previous_version_restores_what_the_last_write_lost(lab: Lab) -> None:
    path = _full_state(lab)
    lab.serial_console.set_disabled(SUBSCRIPTION, False)  # the last write: .prev has "True"
    path.write_bytes(path.read_bytes()[:40])
    _refused(lab.settings)
    os.replace(path.with_name("resources.json.prev"), path)  # what the message tells you
    again = Lab(lab.settings, FakeHypervisor())
    assert again.serial_console.disabled(SUBSCRIPTION)
    assert [a.name for a in again.storage_accounts.list()] == ["diagacct"]


def _as_written_before_hashes(path: Path) -> None:
    """Make `path` what the lab wrote before it kept hashes: the set's password in plain text."""
    data = json.loads(path.read_text())
    model = data["scaleSets"]["rg1/web"]
    del model["admin_password_hash"]
    model["admin_password"] = PASSWORD
    path.write_text(json.dumps(data, indent=1))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_a_scale_set_password_kept_in_plain_text_is_hashed_on_load(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    """A state file from before: the lab loads it, hashes the password, and writes the file
    (and its .prev) back at once without the plain text; the set makes instances with it."""
    path = _full_state(lab)
    previous = path.with_name("resources.json.prev")
    lab.serial_console.set_disabled(SUBSCRIPTION, False)  # .prev: the set, and "disabled"
    for old in (path, previous):
        _as_written_before_hashes(old)
    with caplog.at_level(logging.INFO):
        again = Lab(lab.settings, FakeHypervisor())
    assert "Migrated the lab state file" in caplog.text and PASSWORD not in caplog.text
    (model,) = again.scale_sets.list()
    hashed = model.admin_password_hash
    salt = hashed.split("$")[2]
    assert hashed == subprocess.run(
        ["openssl", "passwd", "-6", "-salt", salt, "-stdin"],
        input=PASSWORD + "\n", capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    for written in (path, previous):
        content = written.read_text()
        assert PASSWORD not in content and '"admin_password"' not in content, written.name
        assert '"admin_password_hash": "$6$' in content, written.name
        assert stat.S_IMODE(written.stat().st_mode) == 0o600, written.name
    assert hashed in path.read_text()
    # Nothing else changed: the document, and the version before it.
    assert not again.serial_console.disabled(SUBSCRIPTION)
    assert [a.name for a in again.storage_accounts.list()] == ["diagacct"]
    assert json.loads(previous.read_text())["serialConsoleDisabled"] == [SUBSCRIPTION.lower()]
    # A third lab reads the migrated file as it is (no second migration: the same hash).
    assert [m.admin_password_hash for m in Lab(lab.settings, FakeHypervisor()).scale_sets.list()
            ] == [hashed]  # fmt: skip

    async def scale_out() -> None:
        await again.scale_sets.scale(model, 1)

    run(again, scale_out)
    (instance,) = again.scale_sets.instances(model)
    initrd = (again.ctx.vm_dir(instance.identity) / "initrd.img").read_bytes()
    assert hashed.encode() in initrd and PASSWORD.encode() not in initrd


def test_a_migrated_state_file_that_cannot_be_written_is_written_by_the_next_change(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _full_state(lab)
    _as_written_before_hashes(path)
    real = state_module.write_atomic

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state_module, "write_atomic", full)
    again = Lab(lab.settings, FakeHypervisor())  # loads, hashes, cannot write: goes on
    assert '"admin_password"' in path.read_text()
    monkeypatch.setattr(state_module, "write_atomic", real)
    again.serial_console.set_disabled(SUBSCRIPTION, False)  # any write
    content = path.read_text()
    assert PASSWORD not in content and '"admin_password_hash": "$6$' in content


@pytest.mark.parametrize("fail", ["fsync", "replace"])
def test_a_crash_between_write_and_rename_keeps_the_old_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: str
) -> None:
    state = StateFile(tmp_path / "resources.json")
    state.update("storageAccounts", {"a": {"x": 1}})
    before = state.path.read_bytes()
    real = getattr(os, fail)
    calls = []

    def crash(*args: Any) -> None:
        calls.append(args)
        # The temp file's write is in flight (fsync) or done (replace): die right there.
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, fail, crash)
    with pytest.raises(OSError, match="No space left"):
        state.update("storageAccounts", {"b": {"y": 2}})
    monkeypatch.setattr(os, fail, real)
    assert calls
    assert state.path.read_bytes() == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files
    # The failed change is not half-applied in memory either.
    assert state.read() == {"storageAccounts": {"a": {"x": 1}}}
    assert StateFile(state.path).read() == {"storageAccounts": {"a": {"x": 1}}}


def test_write_atomic_syncs_the_file_then_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        synced.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    blobs.write_atomic(tmp_path / "f.json", b"{}")
    assert synced == ["file", "rename", "dir"]


def test_concurrent_writers_in_one_process_do_not_share_a_temp_file(tmp_path: Path) -> None:
    import threading

    target = tmp_path / "shot.bmp"
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for _ in range(30):
                blobs.write_atomic(target, bytes([n]) * 4096)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    data = target.read_bytes()
    assert len(data) == 4096 and len(set(data)) == 1  # one writer's whole file
    assert [p.name for p in tmp_path.iterdir()] == ["shot.bmp"]


# --- caches the lab computes again: set aside with a warning, never trusted half-read ----------


def test_a_damaged_kvm_verdict_is_set_aside_and_probed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "accel.json"
    probes: list[Path] = []

    def probe(kernel: Path, initrd: Path, timeout: float) -> tuple[bool, str]:
        probes.append(kernel)
        return False, "no KVM here"

    monkeypatch.setattr(accel, "probe_kvm", probe)
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd"
    assert choose_accel("auto", kernel, initrd, "6.1.0-1", cache) == ("qemu", "no KVM here")
    assert choose_accel("auto", kernel, initrd, "6.1.0-1", cache)[1].endswith(
        "(cached for this host)")
    assert len(probes) == 1
    cache.write_text(cache.read_text()[:15])
    with caplog.at_level(logging.WARNING):
        assert choose_accel("auto", kernel, initrd, "6.1.0-1", cache) == ("qemu", "no KVM here")
    assert len(probes) == 2
    assert f"{cache} is damaged" in caplog.text and "accel.json.corrupt" in caplog.text
    assert cache.with_name("accel.json.corrupt").is_file()
    assert json.loads(cache.read_text())["accel"] == "qemu"


def test_the_kvm_verdict_is_the_hosts_and_a_known_hang_is_checked_again_briefly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One verdict per host, whatever the data dir or the tiny image's build: a new image of
    the same guest kernel uses it; a new guest kernel probes again, and after a hang the probe
    waits 5 s, not 20."""
    cache = tmp_path / "host" / "accel.json"
    timeouts: list[float] = []

    def probe(kernel: Path, initrd: Path, timeout: float) -> tuple[bool, str]:
        timeouts.append(timeout)
        return False, f"the probe guest did not finish in {timeout:g} s ('')"

    monkeypatch.setattr(accel, "probe_kvm", probe)
    first, rebuilt = tmp_path / "tiny-aaa/vmlinuz", tmp_path / "tiny-bbb/vmlinuz"
    assert choose_accel("auto", first, first, "6.1.0-57", cache)[0] == "qemu"
    assert choose_accel("auto", rebuilt, rebuilt, "6.1.0-57", cache)[1].endswith(
        "(cached for this host)")
    assert choose_accel("auto", rebuilt, rebuilt, "6.1.0-58", cache)[0] == "qemu"
    assert timeouts == [accel.PROBE_TIMEOUT_S, RECHECK_TIMEOUT_S]
    forced = choose_accel("kvm", first, first, "6.1.0-58", cache)
    assert forced == ("kvm", "forced by LAB_ACCEL=kvm")


def test_a_damaged_log_index_is_set_aside_and_reads_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "vm.serialconsole.log"
    path.write_bytes(b"A" * 100)
    log = RotatingLog(path)
    assert log.size() == 100
    path.rename(path.with_name(path.name + ".0"))
    path.write_bytes(b"B" * 10)
    assert log.read(95).data == b"AAAAA" + b"B" * 10
    log.index_path.write_bytes(b'{"starts": {"1')
    with caplog.at_level(logging.WARNING):
        assert log.read(100).data == b"B" * 10
    assert "offset index" in caplog.text and str(log.index_path) in caplog.text
    assert log.index_path.with_name(log.index_path.name + ".corrupt").is_file()


def test_a_damaged_image_manifest_is_reported_not_taken_for_not_built(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_image(tmp_path, "tiny", disk=False)
    cache = ImageCache(tmp_path, tmp_path / "recipes")
    manifest = cache.path(cache.get("tiny")) / "manifest.json"
    manifest.write_text(manifest.read_text()[:30])
    with pytest.raises(CorruptState) as info:
        cache.get("tiny")
    assert str(tmp_path / "tiny" / "manifest.json") in info.value.message
    assert "lab image build tiny --force" in info.value.message
    with caplog.at_level(logging.WARNING):
        assert cache.list() == []
    assert "manifest.json is damaged" in caplog.text
    manifest.write_text('{"name": "tiny"}')  # valid JSON, missing fields
    with pytest.raises(CorruptState, match="is damaged"):
        cache.get("tiny")


def test_the_audit_log_survives_an_append_cut_short(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from lab.services.audit import AuditLog

    audit = AuditLog(tmp_path / "audit.log")
    audit.record("connect", vm="vm1", user="alice")
    with audit.path.open("a") as f:
        f.write('{"event": "disconn')  # the lab died in the middle of this append
    with caplog.at_level(logging.WARNING):
        assert [e["event"] for e in audit.entries()] == ["connect"]
    assert f"{audit.path}:2: damaged audit entry left out" in caplog.text
    audit.record("takeover", vm="vm1", user="bob")  # starts on a line of its own
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert [e["event"] for e in audit.entries()] == ["connect", "takeover"]
    assert "audit.log:2: damaged" in caplog.text
    assert audit.path.read_text().endswith("\n")


def test_a_damaged_package_resolution_cache_is_set_aside_and_rewritten(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from lab.storage.images.debpkg import ResolutionCache

    cache = ResolutionCache(tmp_path / "resolved.json")
    cache.store("tiny:abc", "fp", {"busybox-static": "1:1.35"})
    cache.path.write_text(cache.path.read_text()[:20])
    with caplog.at_level(logging.WARNING):
        assert cache.load("tiny:abc", "fp") is None  # resolved again by apt
    assert "resolved.json is damaged" in caplog.text
    assert cache.path.with_name("resolved.json.corrupt").is_file()
    cache.store("tiny:abc", "fp", {"busybox-static": "1:1.36"})
    assert cache.load("tiny:abc", "fp") == {"busybox-static": "1:1.36"}
