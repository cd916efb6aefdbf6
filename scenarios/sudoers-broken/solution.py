"""Reference solution: become root with su, repair the sudoers file."""

from lab.client.session import ConsoleSession
from lab.domain.scenario import VmControls


def solve(session: ConsoleSession, vm: VmControls) -> None:
    session.login("azureuser", "Passw0rd!", timeout=240)
    session.sendline("su -")
    session.expect(r"[Pp]assword: ?", timeout=30)
    session.sendline("Passw0rd!")
    session.expect(r"# ", timeout=30)
    session.run("sed -i 's/NOPASSWD ALL/NOPASSWD: ALL/' /etc/sudoers.d/90-deploy")
    session.sendline("exit")
    session.expect(r"\$ ", timeout=30)
    session.sendline("exit")
