"""The pytest plugin as a CI user runs it: `pytest --lab-file lab.yaml` with its fixtures."""

from __future__ import annotations

import pytest

from tests.integration.labharness import LabHarness

pytestmark = pytest.mark.integration

PLUGIN_LAB = """\
resourceGroups:
  - name: plugin-rg
    virtualMachines:
      - name: pl1
        image: tiny
        size: {vcpus: 1, memoryMiB: 256}
        adminUsername: ciuser
        adminPassword: "Ci-Passw0rd"
        bootDiagnostics: {enabled: true}
"""

CI_TESTS = """
import time

import pytest

STOPPED_AT = {}

def test_command_output_and_status(console):
    assert console.run("uname -s") == ("Linux\\n", 0)
    assert console.run("id -un")[0].strip() == "ciuser"

def test_vm_handle(vm):
    assert vm.info()["powerState"] == "running"
    assert b"pl1 login:" in vm.boot_log()

def test_stop_the_vm_for_the_marker(vm):
    vm.power("powerOff")
    assert vm.info()["powerState"] == "stopped"
    STOPPED_AT["log"] = len(vm.boot_log())

@pytest.mark.lab_vm("pl1")
def test_marker_starts_a_stopped_vm(lab):
    # The test before stopped pl1: only the marker can have started it again, a new boot.
    handle = lab.vm("pl1")
    assert handle.info()["powerState"] == "running"
    deadline = time.monotonic() + 120
    while b"lab: init done" not in handle.boot_log(start=STOPPED_AT["log"]):
        assert time.monotonic() < deadline, "no new boot in the serial log"
        time.sleep(0.5)
"""


def test_plugin_fixtures_run_a_boot_test_and_clean_up(
    harness: LabHarness, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in harness.env.items():
        if key.startswith("LAB_"):
            monkeypatch.setenv(key, value)
    lab_file = harness.write_lab("plugin.yaml", PLUGIN_LAB)
    pytester.makepyfile(test_ci=CI_TESTS)
    result = pytester.runpytest_subprocess("--lab-file", str(lab_file), "-v", timeout=600)
    result.assert_outcomes(passed=4)
    # Teardown deleted the plugin's VM (no --lab-keep).
    names = [vm["name"] for vm in harness.client.json("GET", "/v1/vms")]
    assert "pl1" not in names


def test_plugin_without_lab_file_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(lab):\n    pass\n")
    result = pytester.runpytest_subprocess()
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*--lab-file*"])
