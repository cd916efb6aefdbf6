"""Reference solution: boot with init= from GRUB, put /sbin/init back, reboot."""

from collections.abc import Callable

from lab.console.grub import boot_with_kernel_args, wait_for_reboot
from lab.console.session import ConsoleSession


def solve(session: ConsoleSession, reset: Callable[[], None]) -> None:
    reset()
    boot_with_kernel_args(session, "init=/lib/systemd/systemd")
    session.login("azureuser", "Passw0rd!", timeout=240)
    session.run("sudo ln -s /lib/systemd/systemd /sbin/init")
    session.sendline("sudo reboot")
    wait_for_reboot(session)
