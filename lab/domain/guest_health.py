"""Telling a hung guest from a slow one by what its kernel prints on the serial console.

A Linux kernel whose CPUs stop scheduling says so on its console, whatever its log level: the
soft-lockup watchdog (`watchdog: BUG: soft lockup - CPU#1 stuck for 224s! [ssh-keygen:252]`)
and the RCU stall detector (`rcu: INFO: rcu_preempt detected stalls on CPUs/tasks`, `rcu_preempt
kthread starved for 68269 jiffies!`) print at KERN_EMERG and KERN_ERR, so even a `quiet` boot
shows them. Without this, a hung guest looks like a slow one: nothing more arrives, and every
wait for a prompt runs to its ceiling before it fails.

`HANG_SIGNS` is the one table of those lines (the scenario checks match it too); `HangWatch`
follows a console's output and keeps the latest sign until the guest shows it is alive again
(a login prompt, or a new boot). `boot_over` tells when a boot has ended, well or badly (the
boot slots hold a core until then). Pure: no I/O, the caller passes the time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: What a stuck kernel prints (a regular expression over one line) -> what it means.
HANG_SIGNS: dict[str, str] = {
    r"watchdog: BUG: soft lockup - CPU#\d+ stuck for \d+s!": "a soft lockup",
    r"rcu: INFO: rcu_\w+ (?:self-)?detected stalls?": "an RCU stall",
    r"rcu_\w+ kthread starved for \d+ jiffies": "an RCU stall",
}
#: Each sign with the rest of its line, which the warning quotes (the checks match these too).
HANG_LINES = tuple(f"(?:{p})[^\r\n]*" for p in HANG_SIGNS)
#: What a guest that is alive again prints: a login prompt, or the start of a new boot (GRUB
#: booting an entry, or the kernel's banner on a direct kernel boot).
ALIVE_SIGNS = (r"login: ", r"Booting `", r"Loading Linux ", r"Linux version \d")

#: Where a boot that will never show a login prompt stops instead (a regular expression -> what
#: it is): the scenario checks then fail at once, and the boot slots let the core go.
#: OVMF's shell prompt: a generation 2 VM whose firmware found nothing to boot starts it.
UEFI_SHELL = r"Shell> "
STUCK_SIGNS: dict[str, str] = {
    r"Give root password for maintenance|Press Enter for maintenance": "emergency mode",
    r"Kernel panic - not syncing": "a kernel panic",
    r"\(initramfs\) ": "the initramfs shell",
    r"root@\(none\):": "a shell started as init",
    r"grub(?: rescue)?> ": "GRUB's prompt",
    UEFI_SHELL: "the UEFI shell (the firmware found no boot loader to start)",
}
#: What the debian image prints on the serial console once its boot is over and its login
#: prompts have started (lab-boot-finished.service, as cloud-init's line on Azure).
BOOT_FINISHED = r"lab-boot\[\d+\]: lab: boot finished"
#: A boot is over, for the host's cores: a login prompt, the image's own "boot finished" line,
#: where a broken boot stops, or a kernel that says it is hung.
BOOT_OVER = (r"login: ", BOOT_FINISHED, *STUCK_SIGNS, *HANG_LINES)

#: How much of a chunk's end is kept for the next one: a line cut between two reads is still
#: matched whole.
_CARRY = 512
_HANG = re.compile("|".join(HANG_LINES).encode())
_ALIVE = re.compile("|".join(f"(?:{p})" for p in ALIVE_SIGNS).encode())
_BOOT_OVER = re.compile("|".join(f"(?:{p})" for p in BOOT_OVER).encode())
_HANG_ALONE = [(re.compile(p), meaning) for p, meaning in HANG_SIGNS.items()]


def hang_meaning(line: str) -> str:
    """What a line that matched `HANG_SIGNS` means ("a soft lockup", "an RCU stall")."""
    return next((m for p, m in _HANG_ALONE if p.search(line)), "a hang")


def boot_over(output: bytes) -> bool:
    """Whether a boot's console output (from its start) shows the boot has ended."""
    return _BOOT_OVER.search(output) is not None


@dataclass(frozen=True)
class HangWarning:
    """The latest sign that a guest is hung."""

    #: The console line, as the kernel printed it (without its timestamp prefix).
    line: str
    #: When the first sign of this hang was seen, and the latest (seconds, the caller's clock).
    since: float
    last: float
    #: How many sign lines this hang has printed so far.
    count: int

    @property
    def message(self) -> str:
        return f"the guest is hung: {hang_meaning(self.line)} ({self.line})"


class HangWatch:
    """Follows one console's output; `warning` is set from the first hang sign until a sign of
    life. Cost per chunk: two regular-expression scans of the chunk (in C)."""

    def __init__(self) -> None:
        self.warning: HangWarning | None = None
        self._carry = b""
        #: Bytes fed so far, and where (in those bytes) the last sign counted starts: a sign
        #: read again in the carried part is not counted twice.
        self._fed = 0
        self._last_sign = -1

    def feed(self, data: bytes, now: float) -> None:
        window = self._carry + data
        base = self._fed - len(self._carry)
        self._fed += len(data)
        self._carry = window[-_CARRY:]
        last_hang = last_alive = -1
        for m in _HANG.finditer(window):
            if base + m.start() > self._last_sign:
                self._last_sign = last_hang = base + m.start()
                self._seen(m.group().decode(errors="replace").strip(), now)
        for m in _ALIVE.finditer(window):
            if base + m.start() > self._last_sign:
                self._last_sign = last_alive = base + m.start()
        if last_alive > last_hang:
            self.warning = None

    def clear(self) -> None:
        """A new boot begins (a reset, a power cycle): what the last one printed is history."""
        self.warning = None
        self._carry = b""
        self._last_sign = self._fed

    def _seen(self, line: str, now: float) -> None:
        w = self.warning
        if w is None:
            self.warning = HangWarning(line, now, now, 1)
        else:
            self.warning = HangWarning(line, w.since, now, w.count + 1)
