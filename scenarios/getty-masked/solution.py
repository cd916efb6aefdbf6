"""Reference solution: reset the VM (no login prompt to reboot from), catch GRUB, boot
rescue.target, unmask the serial getty, reboot."""

from lab.client.grub import boot_with_kernel_args, wait_for_reboot
from lab.client.maintenance import maintenance_shell
from lab.client.session import ConsoleSession
from lab.domain.scenario import VmControls


def solve(session: ConsoleSession, vm: VmControls) -> None:
    vm.reset()  # what Ctrl+] r does in `lab console`
    boot_with_kernel_args(session, "systemd.unit=rescue.target")
    maintenance_shell(session, "Passw0rd!")
    session.run("systemctl unmask serial-getty@ttyS0.service")
    session.sendline("reboot")
    wait_for_reboot(session)
