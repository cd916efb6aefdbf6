"""Reference solution: reset the VM (no login prompt to reboot from), catch GRUB, boot
rescue.target, unmask the serial getty, reboot."""

from collections.abc import Callable

from lab.console.grub import boot_with_kernel_args, wait_for_reboot
from lab.console.session import ConsoleSession


def solve(session: ConsoleSession, reset: Callable[[], None]) -> None:
    reset()  # what Ctrl+] r does in `lab console`
    boot_with_kernel_args(session, "systemd.unit=rescue.target")
    session.expect("Give root password for maintenance", timeout=240)
    session.sendline("Passw0rd!")
    session.expect(r"# ", timeout=30)
    session.run("systemctl unmask serial-getty@ttyS0.service")
    session.sendline("reboot")
    wait_for_reboot(session)
