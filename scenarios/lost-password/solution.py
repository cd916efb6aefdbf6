"""Reference solution: init=/bin/bash from GRUB, remount rw, chpasswd, reboot by SysRq."""

from lab.console.grub import boot_with_kernel_args
from lab.console.session import ConsoleSession


def solve(session: ConsoleSession) -> None:
    boot_with_kernel_args(session, "init=/bin/bash")
    session.expect(r"root@\(none\):/# ", timeout=240)
    for command in ("mount -o remount,rw /", "echo 'azureuser:N3w-Passw0rd!' | chpasswd",
                    "sync"):  # fmt: skip
        session.sendline(command)
        session.expect(r"root@\(none\):/# ", timeout=30)
    session.sendline("echo b > /proc/sysrq-trigger")
