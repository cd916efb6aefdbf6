"""pytest plugin for CI boot tests against a Serial Console Lab (entry point `lab`).

    pytest --lab-file lab.yaml tests/

Fixtures (session scope, torn down cleanly):
- `lab`: the lab of `--lab-file`, brought up through the lab daemon (started if none runs);
  its VMs are deleted at the end unless `--lab-keep`.
- `vm`: the VM named by `--lab-vm` (default: the first in the lab file), running.
- `console`: a pexpect-compatible console on `vm`, logged in as the lab file's admin user.

Marker: `@pytest.mark.lab_vm("name")` makes a test require that VM running (it is started if it
is stopped or deallocated).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lab.client import ConsoleSession, connect
from lab.domain.labfile import LabDefinition, VirtualMachineDef, parse_lab_definition
from lab.domain.resource_ids import same
from lab.settings import Settings


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lab", "Serial Console Lab")
    group.addoption("--lab-file", help="lab definition (YAML) to bring up for the test session")
    group.addoption("--lab-vm", help="VM of the `vm` and `console` fixtures (default: first)")
    group.addoption("--lab-keep", action="store_true", help="leave the lab's VMs after the session")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "lab_vm(name): the test needs this lab VM running (started if stopped)"
    )


@dataclass
class LabVm:
    """One VM of the session's lab."""

    lab: Lab
    definition: VirtualMachineDef

    @property
    def name(self) -> str:
        return self.definition.name

    def info(self) -> dict[str, Any]:
        result: dict[str, Any] = self.lab.client.json("GET", f"/v1/vms/{self.name}")
        return result

    def power(self, action: str, **params: str) -> dict[str, Any]:
        """start, powerOff, restart, reset, powerCycle, deallocate or reimage."""
        result: dict[str, Any] = self.lab.client.json(
            "POST", f"/v1/vms/{self.name}/{action}", params=params
        )
        return result

    def boot_log(self, start: int = 0) -> bytes:
        return bytes(
            self.lab.client.request(
                "GET", f"/v1/vms/{self.name}/boot-log", params={"start": start}
            ).content
        )

    def console(self, mode: str = "interactive", **options: Any) -> ConsoleSession:
        return connect(self.name, mode, settings=self.lab.settings, **options)

    def login(self, **options: Any) -> ConsoleSession:
        session = self.console(**options)
        session.login(self.definition.admin_username, self.definition.admin_password)
        return session


@dataclass
class Lab:
    settings: Settings
    definition: LabDefinition
    client: Any

    def vm(self, name: str | None = None) -> LabVm:
        vms = [vm for _rg, vm in self.definition.virtual_machines()]
        if not vms:
            raise pytest.UsageError("the lab file defines no virtual machines")
        if name is None:
            return LabVm(self, vms[0])
        for vm in vms:
            if same(vm.name, name):
                return LabVm(self, vm)
        raise pytest.UsageError(
            f"no VM '{name}' in the lab file; it has: {', '.join(v.name for v in vms)}"
        )


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    from lab.cli.common import ensure_daemon

    path = request.config.getoption("--lab-file")
    if not path:
        raise pytest.UsageError("the `lab` fixtures need --lab-file LAB.yaml")
    text = Path(path).read_text()
    definition = parse_lab_definition(text, source=str(path))
    settings = Settings()
    client = ensure_daemon(settings)
    client.json("POST", "/v1/up", json={"source": str(path), "text": text})
    yield Lab(settings, definition, client)
    if not request.config.getoption("--lab-keep"):
        client.json("POST", "/v1/down", json={"source": str(path), "text": text})


@pytest.fixture(scope="session")
def vm(lab: Lab, request: pytest.FixtureRequest) -> LabVm:
    handle = lab.vm(request.config.getoption("--lab-vm"))
    if handle.info()["powerState"] != "running":
        handle.power("start")
    return handle


@pytest.fixture(scope="session")
def console(vm: LabVm) -> Iterator[ConsoleSession]:
    session = vm.login()
    yield session
    session.close()


@pytest.fixture(autouse=True)
def _lab_vm_marker(request: pytest.FixtureRequest) -> None:
    marker = request.node.get_closest_marker("lab_vm")
    if marker is None:
        return
    handle = request.getfixturevalue("lab").vm(*marker.args)
    if handle.info()["powerState"] != "running":
        handle.power("start")
