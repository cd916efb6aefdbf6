"""Reference solution: boot with init= from GRUB, put /sbin/init back, reboot."""

from lab.client.checks import as_root
from lab.client.grub import boot_with_kernel_args, wait_for_reboot
from lab.client.session import ConsoleSession
from lab.domain.scenario import VmControls

USER, PASSWORD = "azureuser", "Passw0rd!"


def solve(session: ConsoleSession, vm: VmControls) -> None:
    vm.reset()
    boot_with_kernel_args(session, "init=/lib/systemd/systemd")
    session.login(USER, PASSWORD, timeout=240)
    session.run(as_root("ln -s /lib/systemd/systemd /sbin/init", USER, PASSWORD))
    session.sendline(as_root("reboot", USER, PASSWORD))
    wait_for_reboot(session)
