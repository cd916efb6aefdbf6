"""Reference solution: reach OVMF's setup menu with Esc at power-on, then let the boot fail
again into the UEFI shell, start GRUB by hand from the shell, log in, and copy Debian's GRUB
back to the removable-media path the firmware boots."""

import threading
import time

from pexpect import TIMEOUT

from lab.client.checks import as_root
from lab.client.session import ConsoleSession
from lab.domain.guest_health import UEFI_SHELL
from lab.domain.scenario import VmControls

USER, PASSWORD = "azureuser", "Passw0rd!"
GRUB = r"FS0:\EFI\debian\grubx64.efi"
FIX = "cp /boot/efi/EFI/debian/grubx64.efi /boot/efi/EFI/BOOT/BOOTX64.EFI && sync"


def type_slowly(session: ConsoleSession, text: str) -> None:
    """The firmware reads the UART by polling: a key at a time, as a person types."""
    for char in text:
        session.send(char)
        time.sleep(0.05)


def solve(session: ConsoleSession, vm: VmControls) -> None:
    # Esc is tapped from before the reset until the menu shows, so the firmware's window for
    # it (3 s) is not missed however long the reset takes to reach the VM. A tap too many
    # leaves the menu, and the boot goes on to the shell, which is where this goes next.
    stop = threading.Event()

    def tap() -> None:
        while not stop.is_set():
            session.send("\x1b")
            stop.wait(0.3)

    tapper = threading.Thread(target=tap, name="esc-tapper", daemon=True)
    tapper.start()
    try:
        vm.reset()
        session.expect("Boot Maintenance Manager", timeout=240)
    finally:
        stop.set()
        tapper.join()
    # Out of the menu without arrow keys, which a loaded guest may deliver late, to GRUB's
    # menu: a tap that came after the menu showed has left it already (the boot goes on,
    # "BdsDxe: ..."); otherwise a reset, after which the firmware fails to boot again.
    if session.expect(["BdsDxe: ", TIMEOUT], timeout=8) == 1:
        vm.reset()
    session.expect(UEFI_SHELL, timeout=240)
    type_slowly(session, GRUB)
    session.send("\r")
    session.login(USER, PASSWORD, timeout=240)
    session.run_ok(as_root(FIX, USER, PASSWORD), timeout=120)
    session.sendline("exit")
