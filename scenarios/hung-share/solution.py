"""Reference solution: wait out the hung boot, add `nofail` to the share's line, reboot."""

from lab.client.checks import as_root
from lab.client.grub import wait_for_reboot
from lab.client.session import ConsoleSession
from lab.domain.scenario import VmControls

USER, PASSWORD = "azureuser", "Passw0rd!"
FIX = "s|/srv/reports ext4 _netdev |/srv/reports ext4 _netdev,nofail,x-systemd.device-timeout=10s |"


def solve(session: ConsoleSession, vm: VmControls) -> None:
    session.login(USER, PASSWORD, timeout=300)
    session.run(as_root(f"sed -i '{FIX}' /etc/fstab", USER, PASSWORD))
    session.sendline(as_root("reboot", USER, PASSWORD))
    wait_for_reboot(session)
