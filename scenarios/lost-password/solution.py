"""Reference solution: reset, init=/bin/bash from GRUB, remount rw, chpasswd, SysRq reboot."""

from lab.client.grub import boot_with_kernel_args, wait_for_reboot
from lab.client.session import ConsoleSession
from lab.domain.scenario import VmControls

SHELL = r"root@\(none\):/# "
FIX = [
    "mount -o remount,rw /",
    "echo 'azureuser:N3w-Passw0rd!' | chpasswd",
    "sync",
]


def solve(session: ConsoleSession, vm: VmControls) -> None:
    vm.reset()
    boot_with_kernel_args(session, "init=/bin/bash")
    session.expect(SHELL, timeout=240)
    for command in FIX:
        session.run_ok(command)
    session.sendline("echo b > /proc/sysrq-trigger")
    wait_for_reboot(session)
