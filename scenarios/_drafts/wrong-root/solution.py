"""Reference solution: from the (initramfs) shell, mount the real root, fix grub.cfg."""

from collections.abc import Callable

from lab.console.grub import wait_for_reboot
from lab.console.session import ConsoleSession

PROMPT = r"\(initramfs\) "


def solve(session: ConsoleSession, reset: Callable[[], None]) -> None:
    session.sendline()
    session.expect(PROMPT, timeout=300)
    for command in ("mount /dev/vda1 /root",
                    "sed -i 's| root=/dev/vda9 rootdelay=3||' /root/boot/grub/grub.cfg",
                    "umount /root"):  # fmt: skip
        session.sendline(command)
        session.expect(PROMPT, timeout=30)
    session.sendline("reboot -f")
    wait_for_reboot(session)
