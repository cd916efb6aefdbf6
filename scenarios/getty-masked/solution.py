"""Reference solution: boot rescue.target from GRUB, unmask the serial getty, reboot."""

from lab.console.grub import boot_with_kernel_args
from lab.console.session import ConsoleSession


def solve(session: ConsoleSession) -> None:
    boot_with_kernel_args(session, "systemd.unit=rescue.target")
    session.expect("Give root password for maintenance", timeout=240)
    session.sendline("Passw0rd!")
    session.expect(r"# ", timeout=30)
    session.run("systemctl unmask serial-getty@ttyS0.service")
    session.sendline("reboot")
