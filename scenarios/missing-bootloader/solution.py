"""Reference solution: start GRUB by hand from OVMF's UEFI shell, log in, and copy Debian's
GRUB back to the removable-media path the firmware boots."""

import time

from lab.client.checks import as_root
from lab.client.session import ConsoleSession
from lab.domain.guest_health import UEFI_SHELL
from lab.domain.scenario import VmControls

USER, PASSWORD = "azureuser", "Passw0rd!"
GRUB = r"FS0:\EFI\debian\grubx64.efi"
FIX = "cp /boot/efi/EFI/debian/grubx64.efi /boot/efi/EFI/BOOT/BOOTX64.EFI && sync"


def solve(session: ConsoleSession, vm: VmControls) -> None:
    session.sendline()
    session.expect(UEFI_SHELL, timeout=240)
    # The shell reads the UART by polling: a key at a time, as a person types.
    for char in GRUB:
        session.send(char)
        time.sleep(0.05)
    session.send("\r")
    session.login(USER, PASSWORD, timeout=240)
    session.run_ok(as_root(FIX, USER, PASSWORD), timeout=120)
    session.sendline("exit")
