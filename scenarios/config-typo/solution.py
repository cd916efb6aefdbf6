"""Reference solution: log in on the serial console and write the setting anew."""

from lab.client.session import ConsoleSession
from lab.domain.scenario import VmControls

USER, PASSWORD = "azureuser", "Passw0rd!"
#: What a trainee types in the portal's terminal (the browser test types the same).
FIX = "echo 'port = 8080' > /data/app.conf"


def solve(session: ConsoleSession, vm: VmControls) -> None:
    session.login(USER, PASSWORD, timeout=60)
    session.run(FIX)
    session.sendline("exit")
