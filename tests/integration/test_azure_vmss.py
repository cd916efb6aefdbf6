"""Scale sets with real guests through the official SDKs: a set made by PUT boots its
instances, each with its own host name on its own console; scaling out and in; a model
change that instances only get when upgraded (here: boot diagnostics, which is what makes
the serial console available on an instance, as Azure's documentation describes);
per-instance restart, reset, boot diagnostics and serial-console connect."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.compute import ComputeManagementClient

from lab.client import connect
from tests.integration.labharness import LabHarness
from tests.integration.test_azure_compute import bearer_token, compute
from tests.integration.test_azure_serialconsole import Gateway, ports, serialconsole

pytestmark = pytest.mark.integration

RG = "it-rg"


def set_body(capacity: int, boot_diagnostics: bool) -> dict[str, object]:
    return {
        "location": "westeurope",
        "sku": {"name": "Lab_1vCPU_256MiB", "capacity": capacity},
        "properties": {
            "upgradePolicy": {"mode": "Manual"},
            "virtualMachineProfile": {
                "osProfile": {"computerNamePrefix": "itss", "adminUsername": "azureuser",
                              "adminPassword": "Passw0rd!"},
                "storageProfile": {"imageReference": {"publisher": "SerialConsoleLab",
                                                      "offer": "tiny", "sku": "tiny",
                                                      "version": "latest"}},
                "diagnosticsProfile": {"bootDiagnostics": {"enabled": boot_diagnostics}},
            },
        },
    }  # fmt: skip


@pytest.fixture(scope="module")
def sdk(it_lab: LabHarness) -> Iterator[ComputeManagementClient]:
    client = compute(it_lab, "--role", "Virtual Machine Contributor")
    client.virtual_machine_scale_sets.begin_create_or_update(
        RG, "itss", set_body(3, boot_diagnostics=False)
    ).result()
    try:
        yield client
    finally:
        client.virtual_machine_scale_sets.begin_delete(RG, "itss").result()


def log_of(lab: LabHarness, instance: str) -> bytes:
    return lab.cli("boot-log", "itss", "--instance-id", instance).stdout.encode()


def wait_log(lab: LabHarness, instance: str, needle: bytes, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while needle not in log_of(lab, instance):
        assert time.monotonic() < deadline, f"instance {instance}: {needle!r} not seen"
        time.sleep(0.5)


def test_instances_boot_with_their_own_host_names(
    it_lab: LabHarness, sdk: ComputeManagementClient
) -> None:
    vms = list(sdk.virtual_machine_scale_set_vms.list(RG, "itss"))
    assert [(v.name, v.instance_id) for v in vms] == [("itss_0", "0"), ("itss_1", "1"),
                                                      ("itss_2", "2")]  # fmt: skip
    for v in vms:
        wait_log(it_lab, v.instance_id, f"itss00000{v.instance_id} login: ".encode())
    assert all(v.latest_model_applied for v in vms)


def test_scale_out_then_in(it_lab: LabHarness, sdk: ComputeManagementClient) -> None:
    sdk.virtual_machine_scale_sets.begin_update(RG, "itss", {"sku": {"capacity": 5}}).result()
    ids = [v.instance_id for v in sdk.virtual_machine_scale_set_vms.list(RG, "itss")]
    assert ids == ["0", "1", "2", "3", "4"]
    wait_log(it_lab, "4", b"itss000004 login: ")
    sdk.virtual_machine_scale_sets.begin_update(RG, "itss", {"sku": {"capacity": 2}}).result()
    assert [v.instance_id for v in sdk.virtual_machine_scale_set_vms.list(RG, "itss")] == ["0", "1"]
    assert sdk.virtual_machine_scale_sets.get(RG, "itss").sku.capacity == 2


def test_boot_diagnostics_on_the_model_reaches_an_instance_when_upgraded(
    it_lab: LabHarness, sdk: ComputeManagementClient
) -> None:
    who = ("--role", "Virtual Machine Contributor", "--user", "ssuser")
    console = serialconsole(it_lab, *who)
    parent = (RG, "Microsoft.Compute", "virtualMachineScaleSets")
    with pytest.raises(HttpResponseError) as off:
        ports(console).connect(*parent, "itss/virtualMachines/0", "0")
    assert off.value.error.code == "BootDiagnosticsDisabled"
    # Plain dicts go on the wire as they are: ARM's camelCase.
    on = {"diagnosticsProfile": {"bootDiagnostics": {"enabled": True}}}
    patch = {"properties": {"virtualMachineProfile": on}}
    sdk.virtual_machine_scale_sets.begin_update(RG, "itss", patch).result()
    assert not any(v.latest_model_applied
                   for v in sdk.virtual_machine_scale_set_vms.list(RG, "itss"))  # fmt: skip
    sdk.virtual_machine_scale_sets.begin_update_instances(
        RG, "itss", {"instanceIds": ["0"]}
    ).result()
    applied = {v.instance_id: v.latest_model_applied
               for v in sdk.virtual_machine_scale_set_vms.list(RG, "itss")}  # fmt: skip
    assert applied == {"0": True, "1": False}
    wait_log(it_lab, "0", b"itss000000 login: ")
    cs = ports(console).connect(*parent, "itss/virtualMachines/0", "0").connection_string
    gw = Gateway(it_lab, cs, bearer_token(it_lab, *who))
    try:
        gw.type("\r")
        gw.expect(r"itss000000 login: ")
        assert gw.admin("reset").status_code == 200  # an instance's admin command
        gw.expect(r"lab: init done", timeout=60)  # the new boot, on the same websocket
    finally:
        gw.close()


def test_instance_restart_and_boot_diagnostics_data(
    it_lab: LabHarness, sdk: ComputeManagementClient
) -> None:
    data = sdk.virtual_machine_scale_set_vms.retrieve_boot_diagnostics_data(RG, "itss", "0")
    assert (
        "itss_0." in data.serial_console_log_blob_uri and "sig=" in data.serial_console_log_blob_uri
    )
    before = len(log_of(it_lab, "1"))
    sdk.virtual_machine_scale_set_vms.begin_restart(RG, "itss", "1").result()
    deadline = time.monotonic() + 120
    while log_of(it_lab, "1")[before:].count(b"itss000001 login: ") < 1:
        assert time.monotonic() < deadline, "instance 1 did not come back after restart"
        time.sleep(0.5)
    view = sdk.virtual_machine_scale_set_vms.get_instance_view(RG, "itss", "1")
    assert "PowerState/running" in [s.code for s in view.statuses]


def test_python_console_api_on_an_instance(
    it_lab: LabHarness, sdk: ComputeManagementClient
) -> None:
    with connect("itss", instance_id=1, settings=it_lab.settings, timeout=60) as session:
        session.login("azureuser", "Passw0rd!")
        output, status = session.run("hostname")
        assert (output.strip(), status) == ("itss000001", 0)
        session.sendline("exit")
