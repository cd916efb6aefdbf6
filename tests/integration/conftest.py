"""Fixtures for integration tests: one lab daemon and two tiny guests shared by the session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.settings import Settings
from tests.integration.labharness import LabHarness, sweep_orphaned_domains

IT_LAB = """\
subscriptionId: 11111111-2222-3333-4444-555555555555
resourceGroups:
  - name: it-rg
    storageAccounts:
      - name: itdiag
    virtualMachines:
      - name: it1
        image: tiny
        size: {vcpus: 1, memoryMiB: 256}
        adminUsername: azureuser
        adminPassword: "Passw0rd!"
        kernelArgs: "lab.seq=300"
        bootDiagnostics: {enabled: true, storageUri: "https://itdiag.blob.core.windows.net/"}
      - name: it2
        image: tiny
        size: {vcpus: 1, memoryMiB: 256}
        adminUsername: azureuser
        adminPassword: "Passw0rd!"
        bootDiagnostics: {enabled: true}
      - name: it3
        image: tiny
        size: {vcpus: 1, memoryMiB: 256}
        adminUsername: azureuser
        adminPassword: "Passw0rd!"
        kernelArgs: "unknown_nmi_panic=1"
        bootDiagnostics: {enabled: true}
"""

LOGIN = rb"(it1|it2|it3) login: "


@pytest.fixture(scope="session", autouse=True)
def _no_orphans_from_killed_runs() -> None:
    """Domains a killed run left behind would pile up in `virsh list` run after run."""
    sweep_orphaned_domains(Settings().libvirt_uri)


@pytest.fixture(scope="session")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabHarness]:
    data_dir = Path(tmp_path_factory.mktemp("lab"))
    h = LabHarness(data_dir=data_dir, image_cache=Settings().image_cache_dir)
    try:
        h.cli("image", "build", "tiny")
        h.start_daemon()
        yield h
    finally:
        h.cleanup()


@pytest.fixture(scope="session")
def it_lab(harness: LabHarness) -> LabHarness:
    """The two-VM lab, up, with both guests at `login:`."""
    lab_file = harness.write_lab("it.yaml", IT_LAB)
    harness.cli("up", str(lab_file))
    for vm in ("it1", "it2", "it3"):
        harness.wait_for_log(vm, LOGIN, timeout=120)
    return harness
