"""Reference solution: reset, init=/bin/bash from GRUB, remount rw, chpasswd, SysRq reboot."""

from collections.abc import Callable

from lab.console.grub import boot_with_kernel_args, wait_for_reboot
from lab.console.session import ConsoleSession

SHELL = r"root@\(none\):/# "


def solve(session: ConsoleSession, reset: Callable[[], None]) -> None:
    reset()
    boot_with_kernel_args(session, "init=/bin/bash")
    session.expect(SHELL, timeout=240)
    for command in ("mount -o remount,rw /", "echo 'azureuser:N3w-Passw0rd!' | chpasswd",
                    "sync"):  # fmt: skip
        session.sendline(command)
        session.expect(SHELL, timeout=30)
    session.sendline("echo b > /proc/sysrq-trigger")
    wait_for_reboot(session)
