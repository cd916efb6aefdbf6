"""The official Azure SDK for Python against the lab's Azure-compatible API (first slice of
issue 4: HTTPS with the lab's CA, lab-issued tokens, virtualMachines GET/list/instanceView)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
)
from azure.identity import ClientSecretCredential
from azure.mgmt.compute import ComputeManagementClient

from tests.integration.labharness import LabHarness

pytestmark = pytest.mark.integration

SUBSCRIPTION = "11111111-2222-3333-4444-555555555555"


class LabCredential:
    """A `TokenCredential` that hands out one lab-issued token."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


_PRINCIPALS: dict[tuple[str, str, str, str], ClientSecretCredential] = {}


def credential(lab: LabHarness, *args: str) -> ClientSecretCredential:
    """azure-identity's `ClientSecretCredential` for a service principal of the lab's directory,
    signing in through the lab's authority as a user's script would. `args` as `lab token`
    takes them (`--role R`, `--scope S`, `--user NAME`): one principal per combination, made
    once per lab with `lab sp create-for-rbac`."""
    opts = dict(zip(args[::2], args[1::2], strict=True))
    key = (str(lab.data_dir), opts.get("--role", "Contributor"), opts.get("--scope", "/"),
           opts.get("--user", "sdk-user"))  # fmt: skip
    if key not in _PRINCIPALS:
        made = json.loads(lab.cli("sp", "create-for-rbac", "--name", key[3], "--role", key[1],
                                  "--scopes", key[2]).stdout)  # fmt: skip
        _PRINCIPALS[key] = ClientSecretCredential(
            "adfs", made["appId"], made["password"], authority=f"https://127.0.0.1:{lab.api_port}",
            connection_verify=str(lab.ca),
        )  # fmt: skip
    return _PRINCIPALS[key]


def bearer_token(lab: LabHarness, *args: str) -> str:
    """An access token of `credential(lab, *args)`'s principal (for the console websocket)."""
    return credential(lab, *args).get_token("https://management.azure.com/.default").token


def compute(lab: LabHarness, *args: str, token: str | None = None) -> ComputeManagementClient:
    """The SDK's client, signed in as `credential(lab, *args)`; or with one given token (a
    `lab token`, or a bad one)."""
    cred = LabCredential(token) if token else credential(lab, *args)
    return ComputeManagementClient(
        cred, SUBSCRIPTION, base_url=f"https://127.0.0.1:{lab.api_port}",
        connection_verify=str(lab.ca),
    )  # fmt: skip


def test_sdk_lists_and_gets_vms_with_instance_view(it_lab: LabHarness) -> None:
    client = compute(it_lab, "--role", "Reader")
    assert sorted(vm.name for vm in client.virtual_machines.list("it-rg")) == ["it1", "it2", "it3"]
    assert {vm.name for vm in client.virtual_machines.list_all()} >= {"it1", "it2", "it3"}
    vm = client.virtual_machines.get("it-rg", "IT1", expand="instanceView")  # any case, as ARM
    assert vm.vm_id == it_lab.vm("it1")["vmId"]
    assert vm.diagnostics_profile.boot_diagnostics.enabled is True
    codes = [s.code for s in vm.instance_view.statuses]
    assert "PowerState/running" in codes and "ProvisioningState/succeeded" in codes
    log_uri = vm.instance_view.boot_diagnostics.serial_console_log_blob_uri
    assert log_uri.endswith(
        f"/itdiag/bootdiagnostics-it1-{vm.vm_id}/it1.{vm.vm_id}.serialconsole.log"
    )
    view = client.virtual_machines.instance_view("it-rg", "it2")
    assert view.os_name == "Linux"


def test_sdk_sees_azure_error_codes(it_lab: LabHarness) -> None:
    client = compute(it_lab)
    with pytest.raises(ResourceNotFoundError) as missing:
        client.virtual_machines.get("it-rg", "nosuchvm")
    assert missing.value.error.code == "ResourceNotFound"
    assert missing.value.response.headers["x-ms-request-id"]
    with pytest.raises(ClientAuthenticationError) as bad:
        compute(it_lab, token="not-a-token").virtual_machines.get("it-rg", "it1")
    assert bad.value.status_code == 401
    expired = it_lab.cli("token", "--expires", "0.001").stdout.strip()
    time.sleep(1.5)
    with pytest.raises(HttpResponseError) as late:
        compute(it_lab, token=expired).virtual_machines.get("it-rg", "it1")
    assert late.value.status_code == 401 and late.value.error.code == "ExpiredAuthenticationToken"


def _s_client(port: int, version: str) -> str:
    """`openssl s_client` at one TLS version, at security level 0: Debian's OpenSSL would
    otherwise refuse TLS 1.0/1.1 on the client side (SHA-1 and MD5 signatures are below level 1),
    and the server would never be asked. What it printed, stdout and stderr."""
    if shutil.which("openssl") is None:
        pytest.fail("the openssl command is missing (Debian's openssl package)")
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", f"-{version}",
         "-cipher", "DEFAULT@SECLEVEL=0"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    return done.stdout + done.stderr


def test_tls_below_1_2_is_refused(it_lab: LabHarness) -> None:
    # The same client can handshake at all: TLS 1.2 is accepted.
    ok = _s_client(it_lab.api_port, "tls1_2")
    assert re.search(r"New, TLSv1\.2, Cipher is (?!\(NONE\))", ok), ok
    # TLS 1.1, which this client can speak (at level 0), is refused by the server: the client
    # wrote its hello and the server answered nothing at all. (OpenSSL on the server side would
    # send a protocol_version alert, 70; asyncio's TLS transport closes the connection on a
    # failed handshake without flushing it, so the client reads an EOF. Either is accepted.)
    old = _s_client(it_lab.api_port, "tls1_1")
    assert "Cipher is (NONE)" in old, old
    wrote = re.search(r"SSL handshake has read (\d+) bytes and written (\d+) bytes", old)
    assert wrote and wrote[1] == "0" and int(wrote[2]) > 0, old
    assert "SSL alert number 70" in old or "unexpected eof while reading" in old, old


def test_sdk_power_actions_are_long_running_operations(it_lab: LabHarness) -> None:
    client = compute(it_lab, "--role", "Virtual Machine Contributor")
    start = it_lab.log_size("it2")
    client.virtual_machines.begin_restart("it-rg", "it2").result()
    it_lab.wait_for_log("it2", rb"power button", start=start, timeout=30)  # a graceful reboot
    it_lab.wait_for_log("it2", rb"it2 login: ", start=start, timeout=120)
    client.virtual_machines.begin_power_off("it-rg", "it2", skip_shutdown=True).result()
    view = client.virtual_machines.instance_view("it-rg", "it2")
    assert "PowerState/stopped" in [s.code for s in view.statuses]
    with pytest.raises(HttpResponseError) as refused:  # the guard answers at once
        client.virtual_machines.begin_restart("it-rg", "it2").result()
    assert refused.value.status_code == 409
    start = it_lab.log_size("it2")
    client.virtual_machines.begin_start("it-rg", "it2").result()
    assert it_lab.vm("it2")["powerState"] == "running"
    it_lab.wait_for_log("it2", rb"it2 login: ", start=start, timeout=120)


def test_reader_may_read_but_not_act(it_lab: LabHarness) -> None:
    client = compute(it_lab, "--role", "Reader", "--user", "rita")
    assert client.virtual_machines.get("it-rg", "it1").name == "it1"
    with pytest.raises(HttpResponseError) as denied:
        client.virtual_machines.begin_restart("it-rg", "it1").result()
    assert denied.value.status_code == 403
    assert denied.value.error.code == "AuthorizationFailed"
    assert "Microsoft.Compute/virtualMachines/restart/action" in denied.value.error.message


def test_sdk_put_creates_a_real_vm_patch_updates_delete_removes(it_lab: LabHarness) -> None:
    client = compute(it_lab, "--role", "Virtual Machine Contributor")
    body = {
        "location": "westeurope",
        "tags": {"made": "by-sdk"},
        "properties": {
            "hardwareProfile": {"vmSize": "Lab_1vCPU_256MiB"},
            "storageProfile": {"imageReference": {"publisher": "SerialConsoleLab",
                                                  "offer": "tiny", "sku": "tiny",
                                                  "version": "latest"}},
            "osProfile": {"computerName": "sdkvm", "adminUsername": "azureuser",
                          "adminPassword": "Passw0rd!"},
            "diagnosticsProfile": {"bootDiagnostics": {"enabled": True}},
        },
    }  # fmt: skip
    vm = client.virtual_machines.begin_create_or_update("it-rg", "sdkvm", body).result()
    try:
        assert vm.name == "sdkvm" and vm.provisioning_state == "Succeeded"
        it_lab.wait_for_log("sdkvm", rb"sdkvm login: ", timeout=120)  # a real guest booted
        patched = client.virtual_machines.begin_update("it-rg", "sdkvm", {"tags": {"t": "2"}})
        assert patched.result().tags == {"t": "2"}
    finally:
        client.virtual_machines.begin_delete("it-rg", "sdkvm").result()
    with pytest.raises(ResourceNotFoundError):
        client.virtual_machines.get("it-rg", "sdkvm")


def test_a_trusted_launch_vm_boots_uefi(
    it_lab: LabHarness,
) -> None:
    """Generation 2 through the SDK, as `az vm create` asks for it (Trusted Launch): OVMF
    boots the guest, which says so on the serial console; the instance view reports V2; the
    VM's own NVRAM goes with it. (OVMF starts a kernel QEMU loads at once, with no Esc window:
    the setup menu over the serial console is the missing-bootloader scenario's, on Debian.)"""
    client = compute(it_lab, "--role", "Virtual Machine Contributor")
    body = {
        "location": "westeurope",
        "properties": {
            "hardwareProfile": {"vmSize": "Lab_1vCPU_256MiB"},
            "storageProfile": {"imageReference": {"publisher": "SerialConsoleLab",
                                                  "offer": "tiny", "version": "latest"}},
            "osProfile": {"computerName": "gen2", "adminUsername": "azureuser",
                          "adminPassword": "Passw0rd!"},
            "securityProfile": {"securityType": "TrustedLaunch",
                                "uefiSettings": {"secureBootEnabled": True, "vTpmEnabled": True}},
            "diagnosticsProfile": {"bootDiagnostics": {"enabled": True}},
        },
    }  # fmt: skip
    client.virtual_machines.begin_create_or_update("it-rg", "gen2", body).result()
    domain = str(it_lab.vm("gen2?resourceGroup=it-rg")["domain"])
    nvram = Path(f"/var/lib/libvirt/qemu/nvram/{domain}_VARS.fd")
    try:
        log = it_lab.wait_for_log("gen2", rb"gen2 login: ", timeout=180)
        assert b"efi: EFI v2" in log and b"EDK II" in log, log[-2000:]
        view = client.virtual_machines.instance_view("it-rg", "gen2")
        assert view.hyper_v_generation == "V2"
        assert client.virtual_machines.get("it-rg", "gen2").storage_profile.image_reference.sku \
            == "tiny-gen2"  # fmt: skip
        assert nvram.exists(), "libvirt made the VM's variable store from OVMF's template"

    finally:
        client.virtual_machines.begin_delete("it-rg", "gen2").result()
    assert not nvram.exists(), "the NVRAM is removed with the VM"
