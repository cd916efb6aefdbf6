"""Reference solution: SysRq `e` kills the real-time job, then disable it and reboot."""

from lab.client.checks import as_root
from lab.client.grub import wait_for_reboot
from lab.client.session import ConsoleSession
from lab.domain.scenario import VmControls

USER, PASSWORD = "azureuser", "Passw0rd!"


def solve(session: ConsoleSession, vm: VmControls) -> None:
    session.expect("report-builder: building reports", timeout=300)
    vm.sysrq("e")  # SIGTERM to every process but init: systemd then starts a new getty
    session.login(USER, PASSWORD, timeout=240)
    session.run(as_root("systemctl disable report-builder.service", USER, PASSWORD))
    session.sendline(as_root("reboot", USER, PASSWORD))
    wait_for_reboot(session)
