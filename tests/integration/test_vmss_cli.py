"""Scale sets through the CLI with real guests: each instance at its own login prompt (its own
host name), the `--instance-id` hint for a set's name, scale out and in, a reset of one
instance, and `lab down`."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.integration.labharness import LabHarness

pytestmark = pytest.mark.integration

VMSS_LAB = """\
subscriptionId: 11111111-2222-3333-4444-555555555555
resourceGroups:
  - name: vmss-it-rg
    scaleSets:
      - name: web
        sku: {capacity: 2}
        virtualMachineProfile:
          image: tiny
          size: {vcpus: 1, memoryMiB: 256}
          adminUsername: azureuser
          adminPassword: "Passw0rd!"
          diagnosticsProfile: {bootDiagnostics: {enabled: true}}
"""

#: Printed by the tiny image's init once per boot.
BOOT = rb"lab: init done"


def instance_log(lab: LabHarness, instance: str) -> bytes:
    """An instance's whole serial log, through the daemon API's `?instanceId=`."""
    data, offset = b"", 0
    while True:
        params = {"instanceId": instance, "start": str(offset)}
        r = lab.client.request("GET", "/v1/vms/web/boot-log", params=params)
        data += r.content
        offset = int(r.headers["X-Lab-Next"])
        if offset >= int(r.headers["X-Lab-Size"]):
            return data


def wait_for(lab: LabHarness, instance: str, pattern: bytes, count: int = 1,
             timeout: float = 180) -> None:  # fmt: skip
    deadline = time.monotonic() + timeout
    while len(re.findall(pattern, data := instance_log(lab, instance))) < count:
        if time.monotonic() > deadline:
            tail = data[-600:].decode(errors="replace")
            raise AssertionError(f"web_{instance}: {pattern!r} x{count} not seen: {tail}")
        time.sleep(0.5)


def instance_ids(scale_set: dict[str, object]) -> list[str]:
    instances = scale_set["instances"]
    assert isinstance(instances, list)
    return [i["instanceId"] for i in instances]


def test_scale_set_through_the_cli(harness: LabHarness) -> None:
    lab_file = harness.write_lab("vmss.yaml", VMSS_LAB)
    try:
        harness.cli("up", str(lab_file))
        # The harness is shared with other modules: only this lab file's set is looked at.
        sets = json.loads(harness.cli("vmss", "ls", "--json").stdout)
        (web,) = [s for s in sets if s["name"] == "web" and s["resourceGroup"] == "vmss-it-rg"]
        assert (web["name"], web["capacity"], instance_ids(web)) == ("web", 2, ["0", "1"])
        assert [i["computerName"] for i in web["instances"]] == ["web000000", "web000001"]

        # Each instance's guest has its own host name, at its own login prompt.
        wait_for(harness, "1", rb"web000001 login: ")
        log = harness.cli("boot-log", "web", "--instance-id", "1").stdout
        assert "web000001 login: " in log and "web000000" not in log

        # A set's name alone is not a console: the error says how to pick an instance.
        refused = harness.cli("console", "web", check=False)
        assert refused.returncode == 2, refused.stderr
        assert "'web' is a scale set; add --instance-id N" in refused.stderr
        assert "(instances: 0, 1)" in refused.stderr

        out = json.loads(harness.cli("vmss", "scale", "web", "--capacity", "3", "--json").stdout)
        assert (out["capacity"], instance_ids(out)) == (3, ["0", "1", "2"])
        out = json.loads(harness.cli("vmss", "scale", "web", "--capacity", "1", "--json").stdout)
        assert (out["capacity"], instance_ids(out)) == (1, ["0"])  # the highest ids go first

        wait_for(harness, "0", rb"web000000 login: ")
        boots = len(re.findall(BOOT, instance_log(harness, "0")))
        vm = json.loads(harness.cli("vm", "reset", "web", "--instance-id", "0", "--json").stdout)
        assert (vm["name"], vm["powerState"]) == ("web_0", "running")
        wait_for(harness, "0", BOOT, count=boots + 1)  # instance 0 booted again
    finally:
        harness.cli("down", str(lab_file))
    left = json.loads(harness.cli("vmss", "ls", "--json").stdout)
    assert [s for s in left if s["resourceGroup"] == "vmss-it-rg"] == []  # others may share it
