"""Microsoft.SerialConsole, the console gateway and boot-diagnostics blobs with real guests,
driven by the official `azure-mgmt-serialconsole`, `azure-mgmt-compute` and
`azure-storage-blob` packages, and a websocket client speaking the Azure CLI's protocol."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import websocket
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.mgmt.serialconsole import MicrosoftSerialConsoleClient
from azure.storage.blob import BlobClient

from tests.integration.labharness import LabHarness
from tests.integration.test_azure_compute import (
    SUBSCRIPTION,
    LabCredential,
    bearer_token,
    compute,
    credential,
)

pytestmark = pytest.mark.integration

NEG_LAB = """\
subscriptionId: 11111111-2222-3333-4444-555555555555
resourceGroups:
  - name: neg-rg
    virtualMachines:
      - name: nobd
        image: tiny
        size: {vcpus: 1, memoryMiB: 256}
        adminUsername: azureuser
        adminPassword: "Passw0rd!"
        bootDiagnostics: {enabled: false}
      - name: stopped
        image: tiny
        size: {vcpus: 1, memoryMiB: 256}
        adminUsername: azureuser
        adminPassword: "Passw0rd!"
        bootDiagnostics: {enabled: true}
"""


def token(lab: LabHarness, *args: str) -> str:
    """A `lab token` (the lab's own tokens, for scripts, keep working beside the authority's)."""
    return lab.cli("token", *args).stdout.strip()


def serialconsole(lab: LabHarness, *args: str) -> MicrosoftSerialConsoleClient:
    return MicrosoftSerialConsoleClient(
        credential(lab, *args), SUBSCRIPTION, base_url=f"https://127.0.0.1:{lab.api_port}",
        connection_verify=str(lab.ca), api_version="2024-07-01",
    )  # fmt: skip


def ports(client: MicrosoftSerialConsoleClient) -> Any:
    return client.serial_ports


VM = ("it-rg", "Microsoft.Compute", "virtualMachines")


class Gateway:
    """A client of the console websocket as the Azure CLI's extension speaks it."""

    def __init__(self, lab: LabHarness, connection_string: str, bearer: str) -> None:
        self.connection_string = connection_string
        self.bearer = bearer
        self.ca = str(lab.ca)
        self.ws = websocket.create_connection(connection_string, sslopt={"ca_certs": self.ca},
                                              timeout=60)  # fmt: skip
        self.first = self.ws.recv()  # the server speaks first
        self.ws.send(bearer)  # then the client's token, as a text frame
        self.buffer = ""

    def type(self, text: str) -> None:
        for ch in text:  # one frame per keystroke, as the CLI sends them
            self.ws.send(ch)

    def expect(self, pattern: str, timeout: float = 60) -> str:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while not rx.search(self.buffer):
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not seen: {self.buffer[-500:]!r}")
            try:
                frame = self.ws.recv()
            except websocket.WebSocketConnectionClosedException:
                raise AssertionError(f"closed before {pattern!r}: {self.buffer[-500:]!r}") from None
            self.buffer += frame if isinstance(frame, str) else frame.decode(errors="replace")
        m = rx.search(self.buffer)
        assert m is not None
        seen, self.buffer = self.buffer[: m.end()], self.buffer[m.end() :]
        return seen

    def admin(self, command: str, **params: str) -> requests.Response:
        url = self.connection_string.replace("wss://", "https://", 1).replace(
            "/client", f"/adminCommand/{command}"
        )
        body = {"command": command, "requestId": str(uuid.uuid4()), "commandParameters": params}
        return requests.post(url, json=body, verify=self.ca, timeout=30,
                             headers={"authorization": f"Bearer {self.bearer}"})  # fmt: skip

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def gateway(it_lab: LabHarness) -> Iterator[Gateway]:
    who = ("--role", "Virtual Machine Contributor", "--user", "gwuser")
    bearer = bearer_token(it_lab, *who)
    client = serialconsole(it_lab, *who)  # the session is bound to the user who connects
    result = ports(client).connect(*VM, "it1", "0")
    gw = Gateway(it_lab, result.connection_string, bearer)
    try:
        yield gw
    finally:
        gw.close()


def test_sdk_console_service_switch_and_serial_ports(it_lab: LabHarness) -> None:
    client = serialconsole(it_lab)
    names = [op.name for op in client.list_operations().value]
    assert "Microsoft.SerialConsole/serialPorts/connect/action" in names
    assert client.get_console_status("default").properties.disabled is False
    try:
        assert client.disable_console("default").properties.disabled is True
        assert client.get_console_status("default").properties.disabled is True
        with pytest.raises(HttpResponseError) as off:
            ports(client).connect(*VM, "it1", "0")
        assert off.value.status_code == 403 and off.value.error.code == "SerialConsoleDisabled"
        assert "not enabled for this subscription" in off.value.error.message
    finally:
        assert client.enable_console("default").properties.disabled is False
    created = ports(client).create(*VM, "it1", "0", {"properties": {"state": "enabled"}})
    assert created.name == "0" and created.properties.state == "enabled"
    got = ports(client).get(*VM, "it1", "0")
    assert got.id.endswith("/virtualMachines/it1/providers/Microsoft.SerialConsole/serialPorts/0")
    assert [p.name for p in ports(client).list(*VM, "it1").value] == ["0"]
    everywhere = ports(client).list_by_subscriptions().value
    assert {p.id.split("/")[8] for p in everywhere} >= {"it1", "it2", "it3"}


def test_gateway_session_types_and_reads(it_lab: LabHarness, gateway: Gateway) -> None:
    assert gateway.first  # the challenge frame came first
    gateway.type("\r")
    seen = gateway.expect(r"it1 login: |\$ ")
    if not seen.endswith("login: "):  # a shell left by an earlier test: log it out
        gateway.type("exit\r")
        gateway.expect(r"it1 login: ")
    gateway.type("azureuser\r")
    gateway.expect(r"Password: ")
    gateway.type("Passw0rd!\r")
    gateway.expect(r"\$ ")
    gateway.type("echo gw-$((6*7))\r")
    gateway.expect(r"gw-42")
    gateway.type("exit\r")
    gateway.expect(r"it1 login: ")
    audit = [e for e in it_lab.client.json("GET", "/v1/audit") if e.get("user") == "gwuser"]
    assert "connect" in [e["event"] for e in audit]


def test_gateway_admin_commands_sysrq_nmi_reset(it_lab: LabHarness, gateway: Gateway) -> None:
    assert gateway.admin("sysrq", SysRqCommand="h").status_code == 200
    gateway.expect(r"sysrq: HELP : loglevel", timeout=20)
    assert gateway.admin("nmi").status_code == 200
    gateway.expect(r"NMI received for unknown reason", timeout=20)
    # Reset is a hard power cycle in the same QEMU process: the console stays connected and
    # shows the whole new boot.
    assert gateway.admin("reset").status_code == 200
    gateway.expect(r"it1 login: ", timeout=120)
    bad = gateway.admin("sysrq")
    assert bad.status_code == 400 and "SysRqCommand" in bad.json()["error"]["message"]


def test_connection_strings_are_single_use(it_lab: LabHarness) -> None:
    bearer = bearer_token(it_lab)
    cs = ports(serialconsole(it_lab)).connect(*VM, "it2", "0").connection_string
    Gateway(it_lab, cs, bearer).close()
    again = Gateway(it_lab, cs, bearer)
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        for _ in range(10):
            again.buffer += str(again.ws.recv())
    assert "already used" in again.buffer


def test_gateway_refuses_a_bad_token(it_lab: LabHarness) -> None:
    cs = ports(serialconsole(it_lab)).connect(*VM, "it2", "0").connection_string
    gw = Gateway(it_lab, cs, "not-a-token")
    text = ""
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        for _ in range(10):
            text += str(gw.ws.recv())
    assert "access token is invalid" in text


def test_reader_may_not_connect(it_lab: LabHarness) -> None:
    with pytest.raises(HttpResponseError) as denied:
        ports(serialconsole(it_lab, "--role", "Reader")).connect(*VM, "it1", "0")
    assert denied.value.status_code == 403 and denied.value.error.code == "AuthorizationFailed"
    assert "Microsoft.SerialConsole/serialPorts/connect/action" in denied.value.error.message
    with pytest.raises(ClientAuthenticationError):
        expired = token(it_lab, "--expires", "0.001")
        time.sleep(1.2)
        MicrosoftSerialConsoleClient(
            LabCredential(expired), SUBSCRIPTION, base_url=f"https://127.0.0.1:{it_lab.api_port}",
            connection_verify=str(it_lab.ca),
        ).get_console_status("default")  # fmt: skip


def test_connect_refused_when_boot_diagnostics_off_or_vm_stopped(it_lab: LabHarness) -> None:
    lab_file = it_lab.write_lab("neg.yaml", NEG_LAB)
    it_lab.cli("up", str(lab_file))
    try:
        client = ports(serialconsole(it_lab))
        neg = ("neg-rg", "Microsoft.Compute", "virtualMachines")
        with pytest.raises(HttpResponseError) as nobd:
            client.connect(*neg, "nobd", "0")
        assert nobd.value.status_code == 400
        assert nobd.value.error.code == "BootDiagnosticsDisabled"
        assert "requires boot diagnostics to be enabled" in nobd.value.error.message
        vms = compute(it_lab)
        vms.virtual_machines.begin_power_off("neg-rg", "stopped", skip_shutdown=True).result()
        with pytest.raises(HttpResponseError) as stopped:
            client.connect(*neg, "stopped", "0")
        assert stopped.value.status_code == 409 and stopped.value.error.code == "VmNotRunning"
        assert "requires a virtual machine to be running" in stopped.value.error.message
    finally:
        it_lab.cli("down", str(lab_file))


def test_boot_diagnostics_data_downloads_with_azure_storage_blob(it_lab: LabHarness) -> None:
    client = compute(it_lab, "--role", "Virtual Machine Contributor")
    data = client.virtual_machines.retrieve_boot_diagnostics_data(
        "it-rg", "it1", sas_uri_expiration_time_in_minutes=5
    )
    uri = data.serial_console_log_blob_uri
    blob = BlobClient.from_blob_url(uri, connection_verify=str(it_lab.ca))
    log = blob.download_blob().readall()
    assert b"it1 login: " in log
    assert log[:1000] == it_lab.boot_log("it1")[:1000]
    part = blob.download_blob(offset=0, length=100).readall()
    assert part == log[:100]
    shot = BlobClient.from_blob_url(data.console_screenshot_blob_uri,
                                    connection_verify=str(it_lab.ca))  # fmt: skip
    assert shot.download_blob().readall()[:2] == b"BM"
    tampered = re.sub(r"se=[^&]+", "se=2099-01-01T00%3A00%3A00Z", uri)
    with pytest.raises(ClientAuthenticationError) as bad:
        BlobClient.from_blob_url(tampered, connection_verify=str(it_lab.ca)).download_blob()
    assert bad.value.error_code == "AuthenticationFailed"
