"""Reference solution: log in on the serial console, strip the carriage returns."""

from lab.client.session import ConsoleSession
from lab.domain.scenario import VmControls

USER, PASSWORD = "azureuser", "Passw0rd!"
#: What a trainee types in the portal's terminal (the browser test types the same).
FIX = "tr -d '\\r' < /data/settings.env > /tmp/s && cat /tmp/s > /data/settings.env"


def solve(session: ConsoleSession, vm: VmControls) -> None:
    session.login(USER, PASSWORD, timeout=60)
    session.run(FIX)
    session.sendline("exit")
