"""How much of its boot a guest prints on the serial console: the lab file's `bootMessages`.

`normal` (the default) is what Azure's boot diagnostics shows, and what people read a serial log
for: the firmware's own lines (SeaBIOS), the GRUB menu of a disk image, the kernel from its first
line (`earlyprintk` on ttyS0, as Azure's Linux images boot) at the default log level, and
systemd's status lines. `quiet` is the lab's old boot, for those who want speed: the kernel's
`quiet` (warnings and errors only; init's own lines and the login prompt still come), and no
firmware output. The costs under TCG are in `bench/boot.py` and the README.

One table, read by the two ways a guest boots: a kernel boot's command line (the domain XML) and
a disk image's GRUB, which reads `lab_boot_args` from the VM's config disk (`configdisk.py`)
into its default entry.
"""

from __future__ import annotations

from typing import Final, Literal

BootMessages = Literal["quiet", "normal"]

DEFAULT: Final[BootMessages] = "normal"

#: The kernel arguments each level adds to the image's own command line.
KERNEL_ARGS: Final[dict[str, str]] = {
    "quiet": "quiet",
    "normal": "earlyprintk=ttyS0,115200",
}


def kernel_args(level: BootMessages) -> str:
    return KERNEL_ARGS[level]


def firmware_on_serial(level: BootMessages) -> bool:
    """Whether the firmware (SeaBIOS) prints on the serial console too: its banner and the
    boot device it tries, as a physical machine's BIOS would on a serial line."""
    return level == "normal"
