"""Reference solution: answer the maintenance prompt, fix the option's spelling, reboot."""

from lab.client.grub import wait_for_reboot
from lab.client.maintenance import maintenance_shell
from lab.client.session import ConsoleSession
from lab.domain.scenario import VmControls

ROOT_PASSWORD = "Passw0rd!"


def solve(session: ConsoleSession, vm: VmControls) -> None:
    maintenance_shell(session, ROOT_PASSWORD)
    session.run("mount -o remount,rw /")
    session.run("sed -i 's/defualts/defaults/' /etc/fstab && systemctl daemon-reload")
    session.sendline("reboot")
    wait_for_reboot(session)
