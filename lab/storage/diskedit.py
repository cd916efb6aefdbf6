"""Editing a guest's root filesystem offline, without loop devices or mounts: the disk is
converted to a raw file, its ext4 partition edited with `debugfs -w` at the partition's byte
offset, and the result converted back to qcow2. This is how a scenario's breaks reach a VM's
disk before its first boot, with no agent in the guest.

Paths under /boot/efi are on the EFI system partition of the Debian disks (FAT, where a
generation 2 VM's firmware finds GRUB), edited with mtools at that partition's offset: a break
can remove the boot loader OVMF looks for.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from lab.domain.errors import ImageError, InvalidInput

#: Where the root partition starts in the lab's Debian disks (sector 2048).
PARTITION_OFFSET = 1024 * 1024
#: ext4's magic number, 56 bytes into its superblock, which starts 1024 bytes into the fs.
_EXT_MAGIC_AT, _EXT_MAGIC = 1024 + 56, b"\x53\xef"
_FILE_TYPE = 0o100000
_TYPES = {"regular": _FILE_TYPE, "symlink": 0o120000, "directory": 0o040000}
#: Where the guest mounts its EFI system partition (images/debian's fstab).
ESP_MOUNT = "/boot/efi"
#: The MBR's partition entries: 4 of 16 bytes from byte 446; type at +4, first LBA at +8.
_MBR_ENTRIES, _MBR_ENTRY, _ESP_TYPE = 446, 16, 0xEF


class EspFs:
    """The FAT EFI system partition of a raw disk file, edited with mtools."""

    def __init__(self, raw: Path, offset: int) -> None:
        self.image = f"{raw}@@{offset}"

    def read(self, path: str) -> bytes:
        done = self._mtools(["mtype", "-i", self.image, _fat(path)], check=False)
        if done.returncode != 0:
            raise InvalidInput(f"{ESP_MOUNT}{path} does not exist on the EFI system partition",
                               target=f"{ESP_MOUNT}{path}")  # fmt: skip
        return done.stdout

    def exists(self, path: str) -> bool:
        done = self._mtools(["mdir", "-b", "-i", self.image, _fat(path)], check=False)
        return done.returncode == 0

    def write(self, path: str, data: bytes, scratch: Path) -> None:
        src = scratch / "write"
        src.write_bytes(data)
        self._mtools(["mcopy", "-o", "-D", "o", "-i", self.image, str(src), _fat(path)])
        src.unlink()

    def remove(self, path: str) -> None:
        if not self.exists(path):
            raise InvalidInput(f"{ESP_MOUNT}{path} does not exist on the EFI system partition",
                               target=f"{ESP_MOUNT}{path}")  # fmt: skip
        self._mtools(["mdeltree" if self._is_dir(path) else "mdel", "-i", self.image, _fat(path)])

    def _is_dir(self, path: str) -> bool:
        done = self._mtools(["mdir", "-a", "-i", self.image, _fat(path)], check=False)
        return f"Directory for {_fat(path)}" in done.stdout.decode(errors="replace")

    @staticmethod
    def _mtools(args: list[str], check: bool = True) -> subprocess.CompletedProcess[bytes]:
        env = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}
        done = subprocess.run(args, capture_output=True, env=env, check=False)
        if check and done.returncode != 0:
            raise ImageError(f"{args[0]} failed: {done.stderr.decode(errors='replace')[-300:]}")
        return done


def _fat(path: str) -> str:
    return "::" + path


def esp_offset(raw: Path) -> int | None:
    """Where the disk's EFI system partition (MBR type ef) starts, or None."""
    with raw.open("rb") as f:
        f.seek(_MBR_ENTRIES)
        table = f.read(4 * _MBR_ENTRY)
    for i in range(0, len(table), _MBR_ENTRY):
        entry = table[i : i + _MBR_ENTRY]
        if len(entry) == _MBR_ENTRY and entry[4] == _ESP_TYPE:
            return int.from_bytes(entry[8:12], "little") * 512
    return None


class RootFs:
    """The ext4 root filesystem of a raw disk file, edited with debugfs."""

    def __init__(self, raw: Path, offset: int = PARTITION_OFFSET) -> None:
        self.device = f"{raw}?offset={offset}"
        self._scratch = Path(tempfile.mkdtemp(prefix="lab-diskedit-"))
        esp = esp_offset(raw) if offset else None
        self.esp = EspFs(raw, esp) if esp is not None else None

    def _on_esp(self, path: str, what: str | None = None) -> tuple[EspFs, str] | None:
        """The EFI system partition and `path` on it (from its root), or None if `path` is on
        the root fs. `what` names an edit FAT cannot hold, refused there."""
        if self.esp is None or not (path == ESP_MOUNT or path.startswith(ESP_MOUNT + "/")):
            return None
        if what is not None:
            raise InvalidInput(f"{path} is on the EFI system partition (FAT), which has no "
                               f"{what}", target=path)  # fmt: skip
        return self.esp, path[len(ESP_MOUNT):] or "/"

    # -- reading --------------------------------------------------------------------------------
    def read(self, path: str) -> bytes:
        if on_esp := self._on_esp(path):
            return on_esp[0].read(on_esp[1])
        out = self._debugfs([f"dump -p {_q(path)} {_q(str(self._scratch / 'dump'))}"],
                            write=False)  # fmt: skip
        dumped = self._scratch / "dump"
        if not dumped.exists() or "File not found" in out:
            raise InvalidInput(f"{path} does not exist in the guest's root filesystem",
                               target=path)  # fmt: skip
        data = dumped.read_bytes()
        dumped.unlink()
        return data

    def exists(self, path: str) -> bool:
        if on_esp := self._on_esp(path):
            return on_esp[0].exists(on_esp[1])
        out = self._debugfs([f"stat {_q(path)}"], write=False)
        return "Inode:" in out

    def mode(self, path: str) -> int:
        """The file's mode, type bits included (0o100644 for a regular file)."""
        if self._on_esp(path) is not None:
            return _FILE_TYPE | 0o700  # the fstab's umask=0077
        out = self._debugfs([f"stat {_q(path)}"], write=False)
        m = re.search(r"Type:\s+(\w+)\s+Mode:\s+0?([0-7]+)", out)
        if m is None:
            raise InvalidInput(f"{path} does not exist in the guest's root filesystem",
                               target=path)  # fmt: skip
        return _TYPES.get(m.group(1), 0) | int(m.group(2), 8)

    def free_bytes(self) -> int:
        free, size = self._free_blocks()
        return free * size

    def _free_blocks(self) -> tuple[int, int]:
        out = self._debugfs(["stats"], write=False)
        free = re.search(r"Free blocks:\s+(\d+)", out)
        size = re.search(r"Block size:\s+(\d+)", out)
        if free is None or size is None:
            raise ImageError(f"debugfs could not read the filesystem's free space: {out[-300:]}")
        return int(free.group(1)), int(size.group(1))

    # -- writing --------------------------------------------------------------------------------
    def write(self, path: str, data: bytes, mode: int = 0o644) -> None:
        if on_esp := self._on_esp(path):
            on_esp[0].write(on_esp[1], data, self._scratch)
            return
        src = self._scratch / "write"
        src.write_bytes(data)
        cmds = [f"rm {_q(path)}"] if self.exists(path) else []
        cmds += [f"write {_q(str(src))} {_q(path)}",
                 f"sif {_q(path)} mode 0{_FILE_TYPE | mode:o}",
                 f"sif {_q(path)} uid 0", f"sif {_q(path)} gid 0"]  # fmt: skip
        self._debugfs(cmds)
        src.unlink()

    def remove(self, path: str) -> None:
        if on_esp := self._on_esp(path):
            on_esp[0].remove(on_esp[1])
            return
        if not self.exists(path):
            raise InvalidInput(f"{path} does not exist in the guest's root filesystem",
                               target=path)  # fmt: skip
        self._debugfs([f"rm {_q(path)}"])

    def chmod(self, path: str, perms: int) -> None:
        self._on_esp(path, "modes")
        kind = self.mode(path) & 0o170000
        self._debugfs([f"sif {_q(path)} mode 0{kind | perms:o}"])

    def symlink(self, path: str, target: str) -> None:
        self._on_esp(path, "symbolic links")
        cmds = [f"rm {_q(path)}"] if self.exists(path) else []
        self._debugfs([*cmds, f"symlink {_q(path)} {_q(target)}"])

    def fill(self, path: str, leave_bytes: int) -> None:
        """A file that allocates every free block but `leave_bytes` (a full disk)."""
        self._on_esp(path, "room for a full-disk break")
        self.write(path, b"")
        free, block = self._free_blocks()
        # A few blocks stay for the file's own extent tree.
        blocks = max(1, free - leave_bytes // block - 16)
        self._debugfs([f"fallocate {_q(path)} 0 {blocks - 1}"])
        self._debugfs([f"sif {_q(path)} size {blocks * block}"])

    def close(self) -> None:
        for f in self._scratch.iterdir():
            f.unlink()
        self._scratch.rmdir()

    def _debugfs(self, commands: Sequence[str], write: bool = True) -> str:
        script = self._scratch / "cmds"
        script.write_text("\n".join(commands) + "\n")
        args = ["debugfs", *(["-w"] if write else []), "-f", str(script), self.device]
        done = subprocess.run(args, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ImageError(f"debugfs failed ({' '.join(commands)[:200]}): {done.stderr[-300:]}")
        # debugfs reports most command errors on stderr with exit status 0.
        errors = [
            line
            for line in done.stderr.splitlines()
            if line and not line.startswith("debugfs ") and "File not found" not in line
        ]
        if write and errors:
            raise ImageError(f"debugfs: {'; '.join(errors)[:400]}")
        return done.stdout + done.stderr


def _q(value: str) -> str:
    """A debugfs argument: quoted, since paths may hold spaces."""
    if '"' in value or "\n" in value:
        raise InvalidInput(f"unsupported character in path {value!r}", target=value)
    return f'"{value}"'


def edit_disk(base: Path, out: Path, edit: Callable[[RootFs], None]) -> None:
    """Write `out` (qcow2, standalone): `base` with `edit(RootFs)` applied."""
    with tempfile.TemporaryDirectory(prefix="lab-diskedit-", dir=out.parent) as tmp:
        raw = Path(tmp) / "disk.raw"
        _run(["qemu-img", "convert", "-O", "raw", str(base), str(raw)])
        fs = RootFs(raw, fs_offset(raw))
        try:
            edit(fs)
        finally:
            fs.close()
        _run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(out)])


def fs_offset(raw: Path) -> int:
    """Where the file system starts: at byte 0 on a disk that is one file system (the tiny
    image's data disk), else in the Debian disks' first partition."""
    with raw.open("rb") as f:
        f.seek(_EXT_MAGIC_AT)
        return 0 if f.read(2) == _EXT_MAGIC else PARTITION_OFFSET


def _run(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ImageError(f"{args[0]} failed: {done.stderr[-300:]}")
