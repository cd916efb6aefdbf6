"""The debian builder's pieces that run without root or apt: the recipe, the files it writes into
the guest, the grub-probe stand-in, the hooks, the mmdebstrap command line and its progress."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from lab.domain.errors import ImageError
from lab.storage.images import debian, debpkg
from lab.storage.images.registry import BUILDERS

RECIPE = Path(__file__).resolve().parents[2] / "images" / "debian"
UUID = "7c0f74af-c7dc-4ef7-be26-71f914dc8556"


@pytest.fixture(scope="module")
def recipe() -> debian.DebianRecipe:
    return debian.DebianRecipe.load(RECIPE)


def test_the_builder_is_registered() -> None:
    assert isinstance(BUILDERS["debian"], debian.DebianBuilder)


def test_repository_recipe_loads(recipe: debian.DebianRecipe) -> None:
    assert recipe.suite == "bookworm"
    assert recipe.kernel_package == "linux-image-cloud-amd64"
    required = {"systemd-sysv", "udev", "dbus", "grub-pc", "e2fsprogs", "zstd", "kmod", "procps",
                "iproute2", "openssh-server", "sudo"}  # fmt: skip
    assert required <= set(recipe.packages)
    assert {"nano", "vim-tiny"} & set(recipe.packages), "an editor"
    assert all(m.startswith("deb http") and " bookworm" in m for m in recipe.mirrors)
    assert 3 <= recipe.grub.timeout <= 10, "a menu a trainee can catch, without slow boots"
    consoles = [a for a in recipe.grub.cmdline.split() if a.startswith("console=")]
    assert consoles[-1] == "console=ttyS0,115200n8", "ttyS0 last: it is /dev/console"
    assert "115200" in recipe.grub.serial_command and "--parity=no" in recipe.grub.serial_command
    assert {"virtio_pci", "virtio_blk"} <= set(recipe.initramfs_modules)
    assert "serial-getty@ttyS0.service" in recipe.enable
    assert "lab-guest-config.service" in recipe.enable
    assert {"e2scrub_reap.service", "systemd-random-seed.service"} <= set(recipe.mask)
    assert not set(recipe.enable) & set(recipe.mask)
    assert recipe.cmdline == "console=tty0 console=ttyS0,115200n8 no_timer_check $lab_boot_args"
    assert "no_timer_check" in recipe.grub.cmdline, "TCG guests short of CPU fail the check"


def _repository_data() -> dict[str, Any]:
    return tomllib.loads((RECIPE / "recipe.toml").read_text())


@pytest.mark.parametrize(
    ("table", "key", "value", "message"),
    [
        ("grub", "timeout", 0, "1-60"),
        ("grub", "timeout", "5", "timeout"),
        ("grub", "cmdline", "quiet", "ttyS0"),
        ("units", "mask", ["not a unit"], "mask"),
        ("units", "enable", "serial-getty@ttyS0.service", "enable"),
        ("initramfs", "modules", ["virtio blk"], "modules"),
        (None, "packages", ["sudo", ""], "packages"),
        (None, "mirrors", [], "mirrors"),
        (None, "dpkg_path_exclude", [1], "dpkg_path_exclude"),
    ],
)
def test_bad_fields_are_image_errors(
    table: str | None, key: str, value: object, message: str
) -> None:
    data = _repository_data()
    (data[table] if table else data)[key] = value
    with pytest.raises(ImageError, match=message):
        debian.DebianRecipe.parse(data, RECIPE / "recipe.toml")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not toml [", "Cannot read"),
        ('suite = "bookworm"\nkernel_package = "k"\nmirrors = ["http://x"]', "mirrors"),
        (
            'suite = "bookworm"\nkernel_package = "k"\nmirrors = ["deb http://x b main"]\n'
            'packages = ["Bad Name"]',
            "packages",
        ),
        (
            'suite = "bookworm"\nkernel_package = "k"\nmirrors = ["deb http://x b main"]\n'
            "disk_size_mib = 100",
            "disk_size_mib",
        ),
        (
            'suite = "bookworm"\nkernel_package = "k"\nmirrors = ["deb http://x b main"]\n'
            'hostname = "no_underscores"',
            "hostname",
        ),
        ('suite = 12\nkernel_package = "k"\nmirrors = ["deb http://x b main"]', "suite"),
    ],
)
def test_bad_recipes_are_image_errors(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "recipe.toml").write_text(content)
    with pytest.raises(ImageError, match=message):
        debian.DebianRecipe.load(tmp_path)


def test_generated_files(recipe: debian.DebianRecipe) -> None:
    files = debian.generated_files(recipe, UUID)
    fstab = [line for line in files["etc/fstab"].splitlines() if not line.startswith("#")]
    assert fstab == [f"UUID={UUID} / ext4 errors=remount-ro 0 1",
                     "LABEL=ESP /boot/efi vfat umask=0077,nofail 0 0"]
    grub = dict(
        line.split("=", 1) for line in files["etc/default/grub"].splitlines()
        if line and not line.startswith("#")
    )  # fmt: skip
    assert grub["GRUB_TERMINAL"] == "serial"
    assert grub["GRUB_TIMEOUT_STYLE"] == "menu"
    assert grub["GRUB_TIMEOUT"] == str(recipe.grub.timeout)
    assert grub["GRUB_SERIAL_COMMAND"] == (
        '"serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1"'
    )
    assert grub["GRUB_CMDLINE_LINUX"] == '"console=tty0 console=ttyS0,115200n8 no_timer_check"'
    # GRUB's variable, escaped from the shell that sources the file (01_lab sets it per VM).
    assert grub["GRUB_CMDLINE_LINUX_DEFAULT"] == '"\\$lab_boot_args"'
    assert files["etc/hostname"] == "debian\n"
    assert "127.0.1.1\tdebian\n" in files["etc/hosts"]
    conf = files["etc/initramfs-tools/conf.d/lab.conf"]
    assert "MODULES=list\n" in conf and "FSTYPE=ext4\n" in conf and "RESUME=none\n" in conf
    modules = files["usr/share/initramfs-tools/modules.d/lab.conf"].splitlines()[1:]
    assert modules == list(recipe.initramfs_modules)


@pytest.mark.parametrize(
    ("args", "answer"),
    [
        (["--target=device", "/"], "/dev/vda1\n"),
        (["-t", "device", "/boot"], "/dev/vda1\n"),
        (["--device", "/dev/vda1", "--target=fs"], "ext2\n"),
        (["--device", "/dev/vda1", "--target=fs_uuid"], f"{UUID}\n"),
        (["--device", "/dev/vda1", "--target=partmap"], "msdos\n"),
        (["--device", "/dev/vda1", "--target=hints_string"], ""),
        (["--device", "/dev/vda1", "--target=compatibility_hint"], ""),
        (["--device", "/dev/vda1", "--target=abstraction"], ""),
    ],
)
def test_grub_probe_standin_answers_for_the_future_disk(
    tmp_path: Path, args: list[str], answer: str
) -> None:
    script = tmp_path / "grub-probe"
    script.write_text(debian.grub_probe_standin(UUID))
    done = subprocess.run(["sh", str(script), *args], capture_output=True, text=True, check=True)
    assert done.stdout == answer


def test_hooks_and_guest_scripts_are_valid_sh_and_executable() -> None:
    for rel in ("essential.sh", "customize.sh", "rootfs/usr/local/sbin/lab-guest-config"):
        subprocess.run(["sh", "-n", str(RECIPE / rel)], check=True)
        assert (RECIPE / rel).stat().st_mode & 0o111, f"{rel} must be executable"


def test_guest_config_unit_runs_early_and_before_logins() -> None:
    unit = (RECIPE / "rootfs/etc/systemd/system/lab-guest-config.service").read_text()
    before = " ".join(line.partition("=")[2] for line in unit.splitlines()
                      if line.startswith("Before="))  # fmt: skip
    for name in ("sysinit.target", "serial-getty@ttyS0.service", "ssh.service",
                 "emergency.service", "systemd-user-sessions.service"):  # fmt: skip
        assert name in before.split(), name
    assert "After=systemd-remount-fs.service" in unit
    assert "DefaultDependencies=no" in unit
    assert "ExecStart=/usr/local/sbin/lab-guest-config" in unit


def test_staging_holds_generated_files_and_the_rootfs(
    tmp_path: Path, recipe: debian.DebianRecipe
) -> None:
    debian._stage(recipe, RECIPE, tmp_path, UUID)
    fstab = (tmp_path / "etc/fstab").read_text()
    assert f"UUID={UUID} / ext4 errors=remount-ro 0 1\n" in fstab
    script = tmp_path / "usr/local/sbin/lab-guest-config"
    assert script.stat().st_mode & 0o777 == 0o755
    unit = tmp_path / "etc/systemd/system/lab-guest-config.service"
    assert unit.stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "etc").stat().st_mode & 0o777 == 0o755


def test_mmdebstrap_command_line(recipe: debian.DebianRecipe, tmp_path: Path) -> None:
    pins = {"sudo": "1.9", "linux-image-6.1.0-9-cloud-amd64": "6.1.1-1", "udev": "252"}
    argv = debian.mmdebstrap_argv(recipe, pins, tmp_path / "root", recipe_dir=RECIPE)
    assert argv[0] == "mmdebstrap"
    assert {"--mode=root", "--format=directory", "--variant=minbase"} <= set(argv)
    assert "--include=linux-image-6.1.0-9-cloud-amd64=6.1.1-1,sudo=1.9,udev=252" in argv
    hooks = [a for a in argv if a.startswith(("--essential-hook=", "--customize-hook="))]
    assert any(str(RECIPE / "essential.sh") in h for h in hooks)
    assert any(str(RECIPE / "customize.sh") in h for h in hooks)
    assert "--dpkgopt=path-exclude=/usr/share/man/*" in argv
    tail = argv[-(2 + len(recipe.mirrors)) :]
    assert tail == ["bookworm", str(tmp_path / "root"), *recipe.mirrors]


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs sh")
def test_deb_cache_hooks_link_packages_in_and_out(
    recipe: debian.DebianRecipe, tmp_path: Path
) -> None:
    argv = debian.mmdebstrap_argv(recipe, {}, tmp_path / "root", recipe_dir=RECIPE)
    setup = next(a for a in argv if a.startswith("--setup-hook=")).partition("=")[2]
    sync_out = [a for a in argv if a.startswith("--customize-hook=")][-1].partition("=")[2]
    debs, root = tmp_path / "debs", tmp_path / "root"
    debs.mkdir()
    (debs / "old_1_amd64.deb").write_bytes(b"old")
    env = {"LAB_DEBS": str(debs), "PATH": "/usr/bin:/bin"}
    subprocess.run(["sh", "-c", setup, "hook", str(root)], env=env, check=True)
    archives = root / "var/cache/apt/archives"
    assert (archives / "old_1_amd64.deb").read_bytes() == b"old"
    (archives / "new_2_amd64.deb").write_bytes(b"new")
    subprocess.run(["sh", "-c", sync_out, "hook", str(root)], env=env, check=True)
    assert sorted(p.name for p in debs.iterdir()) == ["new_2_amd64.deb", "old_1_amd64.deb"]


def test_progress_only_moves_forward() -> None:
    seen: list[tuple[str, float]] = []
    progress = debian.MmdebstrapProgress(lambda step, f: seen.append((step, f)))
    lines = [
        "I: running apt-get update...", "Get:1 http://deb.debian.org/debian bookworm InRelease",
        "I: downloading packages with apt...", "I: extracting archives...",
        "I: installing essential packages...", "Setting up libc6:amd64 (2.36-9) ...",
        "I: running --essential-hook in shell: sh essential.sh", "lab: preseeding grub-pc",
        "I: installing remaining packages inside the chroot...",
        *[f"Setting up pkg{i} (1.0) ..." for i in range(300)],
        "I: running --customize-hook in shell: sh customize.sh", "lab: writing /boot/grub/grub.cfg",
        "I: cleaning package lists and apt cache...", "noise that is not progress",
    ]  # fmt: skip
    for line in lines:
        progress(line)
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions)
    assert fractions[0] > 0 and fractions[-1] <= debian.MMDEBSTRAP_DONE
    assert any(s == "preseeding grub-pc" for s, _ in seen), "the hooks' lines name the step"
    assert any(s == "Setting up pkg299" for s, _ in seen)
    in_install = [f for s, f in seen if s.startswith("Setting up pkg")]
    assert max(in_install) < 0.62, "package lines stay within their phase"


def test_resolve_pins_every_package_and_the_versioned_kernel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def show(names: list[str]) -> dict[str, dict[str, Any]]:
        records = {n: {"Package": n, "Version": f"{n}-v1"} for n in names}
        if "linux-image-cloud-amd64" in records:
            records["linux-image-cloud-amd64"]["Depends"] = (
                "linux-image-6.1.0-42-cloud-amd64 (= 6.1.99-1)"
            )
        return records

    monkeypatch.setattr(debpkg, "show_candidates", show)
    pins = debian.DebianBuilder().resolve(RECIPE)
    recipe = debian.DebianRecipe.load(RECIPE)
    assert pins["linux-image-6.1.0-42-cloud-amd64"] == "6.1.99-1"
    assert pins["linux-image-cloud-amd64"] == "linux-image-cloud-amd64-v1"
    assert set(recipe.packages) < set(pins)
