"""Reference solution: answer the maintenance prompt, fix the option's spelling, reboot."""

from collections.abc import Callable

from lab.console.grub import wait_for_reboot
from lab.console.session import ConsoleSession

ROOT_PASSWORD = "Passw0rd!"


def solve(session: ConsoleSession, reset: Callable[[], None]) -> None:
    session.sendline()  # the prompt again, whatever the console showed before we came
    session.expect("Give root password for maintenance", timeout=240)
    session.sendline(ROOT_PASSWORD)
    session.expect(r"# ", timeout=30)
    session.run("mount -o remount,rw /")
    session.run("sed -i 's/defualts/defaults/' /etc/fstab && systemctl daemon-reload")
    session.sendline("reboot")
    wait_for_reboot(session)
