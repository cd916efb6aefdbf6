"""The real Azure CLI (`azure-cli` from PyPI, unchanged) against a real `lab serve`: cloud
registration by discovery, sign-in with service principals (secret, certificate) and a user
(device code, approved in Chromium on the portal's device page), reads, power actions, boot
logs (custom and managed storage), RBAC refusals and revocation, and a token from
`az account get-access-token` opening the serial console.

Each principal has its own `AZURE_CONFIG_DIR`, as separate users' machines would. The only
settings besides `az cloud register` and `az cloud set` are the CA bundle variables.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

from lab.domain.identity import TENANT_ID
from tests.integration.azcli import Az, ensure_azure_cli
from tests.integration.labharness import LabHarness, report_figures

pytestmark = pytest.mark.integration

SUB = "11111111-2222-3333-4444-555555555555"
AZ_LAB = f"""\
subscriptionId: {SUB}
resourceGroups:
  - name: azcli-rg
    storageAccounts:
      - name: azclidiag
    virtualMachines:
      - name: azc1
        image: tiny
        size: {{vcpus: 1, memoryMiB: 256}}
        adminUsername: azureuser
        adminPassword: "Passw0rd!"
        bootDiagnostics: {{enabled: true, storageUri: "https://azclidiag.blob.core.windows.net/"}}
    scaleSets:
      - name: azcss
        sku: {{capacity: 1}}
        virtualMachineProfile:
          image: tiny
          size: {{vcpus: 1, memoryMiB: 256}}
          adminUsername: azureuser
          adminPassword: "Passw0rd!"
          diagnosticsProfile:
            bootDiagnostics: {{enabled: true}}
"""
#: azure-cli 2.91.0 prints a custom-storage boot log, then crashes in its own code: its
#: `BootLogStreamWriter.write` returns None where the `azure-storage-blob` it pins
#: (12.29.0b1) now adds up what `write` returns. Real Azure meets the same crash.
AZ_BOOT_LOG_BUG = "unsupported operand type(s) for +=: 'int' and 'NoneType'"


@dataclass
class Sp:
    app_id: str
    password: str | None
    cert_file: Path | None = None


@dataclass
class CliLab:
    lab: LabHarness
    az_bin: Path
    root: Path
    figures: dict[str, float]

    @property
    def arm(self) -> str:
        return f"https://127.0.0.1:{self.lab.api_port}/"

    def az(self, who: str) -> Az:
        """`who`'s az, with the lab registered and set as its cloud (discovery, no extras)."""
        az = Az(self.az_bin, self.root / who, self.lab.ca)
        if not (self.root / who / "clouds.config").exists():
            az("cloud", "register", "-n", "Lab", "--endpoint-resource-manager", self.arm)
            az("cloud", "set", "-n", "Lab")
        return az

    def sp(self, name: str, *args: str) -> Sp:
        out = json.loads(self.lab.cli("sp", "create-for-rbac", "--name", name, *args).stdout)
        assert out["tenant"] == TENANT_ID and out["displayName"] == name
        cert = out.get("fileWithCertAndPrivateKey")
        return Sp(out["appId"], out["password"], Path(cert) if cert else None)

    def signed_in(self, who: str, sp: Sp) -> Az:
        az = self.az(who)
        credential = (
            ["--certificate", str(sp.cert_file)] if sp.cert_file else ["-p", str(sp.password)]
        )
        az("login", "--service-principal", "-u", sp.app_id, *credential, "--tenant", TENANT_ID)
        return az


@pytest.fixture(scope="module")
def cli_lab(it_lab: LabHarness, tmp_path_factory: pytest.TempPathFactory,
            request: pytest.FixtureRequest) -> Iterator[CliLab]:  # fmt: skip
    az_bin = ensure_azure_cli()
    lab_file = it_lab.write_lab("azcli.yaml", AZ_LAB)
    it_lab.cli("up", str(lab_file))
    for vm in ("azc1", "azcss_0"):
        it_lab.wait_for_log(vm, rb"login: ", timeout=120)
    figures: dict[str, float] = {}
    cl = CliLab(it_lab, az_bin, Path(tmp_path_factory.mktemp("az")), figures)
    try:
        yield cl
    finally:
        it_lab.cli("down", str(lab_file))  # the session lab is shared: leave it as found
    report_figures(request.config, "the real Azure CLI against the lab (seconds per command)",
                   [f"{k:<44} {v:6.2f} s" for k, v in figures.items()])  # fmt: skip


@pytest.fixture(scope="module")
def contributor(cli_lab: CliLab) -> Az:
    sp = cli_lab.sp("cli-contributor", "--role", "Contributor", "--scopes", f"/subscriptions/{SUB}")
    return cli_lab.signed_in("contributor", sp)


def test_cloud_register_discovers_the_lab_and_a_secret_signs_in(
    cli_lab: CliLab, contributor: Az
) -> None:
    cloud = json.loads(contributor("cloud", "show", "-n", "Lab").stdout)
    base = cli_lab.arm.rstrip("/")
    assert cloud["endpoints"]["activeDirectory"] == f"{base}/adfs"
    assert cloud["endpoints"]["resourceManager"] == cli_lab.arm
    assert cloud["endpoints"]["portal"] == cli_lab.arm
    account = json.loads(contributor("account", "show").stdout)
    assert account["id"] == SUB and account["tenantId"] == TENANT_ID
    assert account["user"]["type"] == "servicePrincipal"
    assert account["environmentName"] == "Lab"
    cli_lab.figures["az version (the CLI's own start-up)"] = contributor(
        "version", "-o", "none"
    ).seconds


def test_a_certificate_signs_in(cli_lab: CliLab, tmp_path: Path) -> None:
    sp = cli_lab.sp("cli-cert", "--role", "Reader", "--scopes", f"/subscriptions/{SUB}",
                    "--create-cert", "--cert-file", str(tmp_path / "cli-cert.pem"))  # fmt: skip
    assert sp.password is None and sp.cert_file is not None
    assert sp.cert_file.stat().st_mode & 0o777 == 0o600
    az = cli_lab.signed_in("cert", sp)
    assert json.loads(az("account", "show").stdout)["user"]["name"] == sp.app_id
    assert "azc1" in [v["name"] for v in json.loads(az("vm", "list").stdout)]


def test_a_wrong_secret_and_an_unknown_app_are_refused(cli_lab: CliLab) -> None:
    sp = cli_lab.sp("cli-wrong", "--role", "Reader", "--scopes", f"/subscriptions/{SUB}")
    az = cli_lab.az("wrong")
    wrong = az("login", "--service-principal", "-u", sp.app_id, "-p", "not-the-secret",
               "--tenant", TENANT_ID, check=False)  # fmt: skip
    assert wrong.returncode != 0 and "AADSTS7000215" in wrong.stderr, wrong.stderr
    unknown = az("login", "--service-principal", "-u", str(uuid.uuid4()), "-p", "x",
                 "--tenant", TENANT_ID, check=False)  # fmt: skip
    assert unknown.returncode != 0 and "AADSTS700016" in unknown.stderr, unknown.stderr


def test_reads_vms_scale_sets_and_role_assignments(cli_lab: CliLab, contributor: Az) -> None:
    names = [v["name"] for v in json.loads(contributor("vm", "list").stdout)]
    assert {"azc1", "it1", "it2"} <= set(names)
    assert json.loads(contributor("vm", "list", "--vmss", "azcss", "-g", "azcli-rg").stdout) == []
    shown = json.loads(contributor("vm", "show", "-d", "-g", "azcli-rg", "-n", "azc1").stdout)
    assert shown["powerState"] == "VM running"
    view = json.loads(contributor("vm", "get-instance-view", "-g", "azcli-rg", "-n", "azc1").stdout)
    assert "PowerState/running" in [s["code"] for s in view["instanceView"]["statuses"]]
    instances = json.loads(contributor("vmss", "list-instances", "-g", "azcli-rg",
                                       "-n", "azcss").stdout)  # fmt: skip
    assert [i["name"] for i in instances] == ["azcss_0"]
    listed = contributor("role", "assignment", "list", "--all")
    rows = json.loads(listed.stdout)
    cli_lab.figures["az role assignment list --all"] = listed.seconds
    mine = [r for r in rows if r["principalName"] == json.loads(
        contributor("account", "show").stdout)["user"]["name"]]  # fmt: skip
    assert [(r["roleDefinitionName"], r["scope"]) for r in mine] == [
        ("Contributor", f"/subscriptions/{SUB}")
    ]
    roles = json.loads(contributor("role", "definition", "list").stdout)
    assert {"Reader", "Contributor", "Owner", "Virtual Machine Contributor"} <= {
        r["roleName"] for r in roles
    }


def test_power_actions_run_and_are_timed(cli_lab: CliLab, contributor: Az) -> None:
    lab = cli_lab.lab
    vm = ("-g", "azcli-rg", "-n", "azc1")
    start = lab.log_size("azc1")
    restart = contributor("vm", "restart", *vm)
    lab.wait_for_log("azc1", rb"power button", start=start, timeout=30)  # a graceful reboot
    lab.wait_for_log("azc1", rb"azc1 login: ", start=start, timeout=120)
    stop = contributor("vm", "stop", *vm)  # graceful: the guest's acpid powers it off
    assert lab.vm("azc1")["powerState"] == "stopped"
    deallocate = contributor("vm", "deallocate", *vm)
    assert lab.vm("azc1")["powerState"] == "deallocated"
    started = contributor("vm", "start", *vm)
    assert lab.vm("azc1")["powerState"] == "running"
    lab.wait_for_log("azc1", rb"azc1 login: ", timeout=120)
    for name, result in (("restart", restart), ("stop", stop), ("deallocate", deallocate),
                         ("start", started)):  # fmt: skip
        cli_lab.figures[f"az vm {name}"] = result.seconds


def test_boot_logs_from_custom_and_managed_storage(cli_lab: CliLab, contributor: Az) -> None:
    lab = cli_lab.lab
    lab.wait_for_log("azc1", rb"azc1 login: ", timeout=120)
    custom = contributor("vm", "boot-diagnostics", "get-boot-log", "-g", "azcli-rg", "-n", "azc1",
                         check=False)  # fmt: skip
    # It listed the accounts, matched primaryEndpoints.blob, listed keys and read the blob with
    # Shared Key: the log is on stdout (before azure-cli's own crash, see AZ_BOOT_LOG_BUG).
    assert "azc1 login:" in custom.stdout, custom.stderr
    assert custom.returncode == 0 or AZ_BOOT_LOG_BUG in custom.stderr, custom.stderr
    cli_lab.figures["az vm boot-diagnostics get-boot-log (custom)"] = custom.seconds
    managed = contributor("vm", "boot-diagnostics", "get-boot-log", "-g", "it-rg", "-n", "it2")
    assert "it2 login:" in managed.stdout
    cli_lab.figures["az vm boot-diagnostics get-boot-log (managed)"] = managed.seconds
    uris = json.loads(contributor("vm", "boot-diagnostics", "get-boot-log-uris",
                                  "-g", "azcli-rg", "-n", "azc1").stdout)  # fmt: skip
    assert uris["serialConsoleLogBlobUri"].startswith(f"{cli_lab.arm}azclidiag/bootdiagnostics-")
    assert requests.get(uris["serialConsoleLogBlobUri"], verify=str(lab.ca),
                        timeout=30).text.count("azc1 login:") >= 1  # fmt: skip


def _connect(az: Az, lab: LabHarness, vm_id: str) -> str:
    port = f"{vm_id}/providers/Microsoft.SerialConsole/serialPorts/0"
    az("rest", "--method", "put", "--url", f"{port}?api-version=2024-07-01",
       "--body", '{"properties": {"state": "enabled"}}')  # fmt: skip
    done = az("rest", "--method", "post", "--url", f"{port}/connect?api-version=2024-07-01")
    return str(json.loads(done.stdout)["connectionString"])


def _read_until(ws: websocket.WebSocket, pattern: str, timeout: float = 60) -> str:
    seen, deadline = "", time.monotonic() + timeout
    while not re.search(pattern, seen):
        ws.settimeout(max(0.1, deadline - time.monotonic()))
        assert time.monotonic() < deadline, f"{pattern!r} not seen: {seen[-500:]!r}"
        frame: Any = ws.recv()
        seen += frame if isinstance(frame, str) else frame.decode(errors="replace")
    return seen


def test_an_access_token_from_az_opens_the_serial_console(cli_lab: CliLab, contributor: Az) -> None:
    lab = cli_lab.lab
    lab.wait_for_log("azc1", rb"azc1 login: ", timeout=120)
    token = json.loads(contributor("account", "get-access-token").stdout)["accessToken"]
    vm_id = (f"/subscriptions/{SUB}/resourceGroups/azcli-rg/providers/Microsoft.Compute"
             "/virtualMachines/azc1")  # fmt: skip
    cs = _connect(contributor, lab, vm_id)
    assert "ws" not in cs.rsplit("/sessions/", 1)[1]  # survives the extension's replace("ws", ...)
    ws = websocket.create_connection(cs, sslopt={"ca_certs": str(lab.ca)}, timeout=60)
    try:
        ws.recv()  # the gateway's first frame
        ws.send(token)
        # The guest answers Enter with a prompt once it is up (an earlier test restarted it, and
        # its log holds the prompt of the boot before): a SysRq sent earlier is lost.
        ws.send("\r")
        _read_until(ws, r"azc1 login: ", timeout=120)
        admin = cs.replace("wss://", "https://", 1).replace("/client", "/adminCommand/sysrq")
        r = requests.post(admin, json={"command": "sysrq", "requestId": str(uuid.uuid4()),
                                       "commandParameters": {"SysRqCommand": "h"}},
                          headers={"authorization": f"Bearer {token}"}, verify=str(lab.ca),
                          timeout=30)  # fmt: skip
        assert r.status_code == 200, r.text
        _read_until(ws, r"sysrq: HELP", timeout=30)
    finally:
        ws.close()
    # An older extension: the token in the URL, and sent again as a frame, which is not typed.
    cs = _connect(contributor, lab, vm_id)
    ws = websocket.create_connection(f"{cs}?authorization={token}",
                                     sslopt={"ca_certs": str(lab.ca)}, timeout=60)  # fmt: skip
    try:
        ws.send(token)
        ws.send("\r")
        seen = _read_until(ws, r"azc1 login: ", timeout=60)
        assert token[:20] not in seen
    finally:
        ws.close()


def test_a_reader_may_not_restart(cli_lab: CliLab) -> None:
    sp = cli_lab.sp("cli-reader", "--role", "Reader", "--scopes", f"/subscriptions/{SUB}")
    az = cli_lab.signed_in("reader", sp)
    assert json.loads(az("vm", "show", "-g", "azcli-rg", "-n", "azc1").stdout)["name"] == "azc1"
    refused = az("vm", "restart", "-g", "azcli-rg", "-n", "azc1", "--no-wait", check=False)
    assert refused.returncode != 0 and "AuthorizationFailed" in refused.stderr, refused.stderr


def test_a_deleted_assignment_refuses_the_next_call(cli_lab: CliLab) -> None:
    sp = cli_lab.sp("cli-revoked", "--role", "Reader", "--scopes",
                    f"/subscriptions/{SUB}/resourceGroups/azcli-rg")  # fmt: skip
    az = cli_lab.signed_in("revoked", sp)
    assert az("vm", "show", "-g", "azcli-rg", "-n", "azc1").returncode == 0
    cli_lab.lab.cli("role", "assignment", "delete", "--assignee", sp.app_id)
    # The same cached token, minutes from expiry: refused now, not at expiry.
    refused = az("vm", "show", "-g", "azcli-rg", "-n", "azc1", check=False)
    assert refused.returncode != 0 and "AuthorizationFailed" in refused.stderr, refused.stderr


def test_device_code_sign_in_through_the_portal(cli_lab: CliLab) -> None:
    from playwright.sync_api import sync_playwright

    lab = cli_lab.lab
    lab.cli("user", "add", "trainee1", "--password", "Tr@inee-pass-1", "--role", "Reader",
            "--scope", f"/subscriptions/{SUB}")  # fmt: skip
    az = cli_lab.az("device")
    proc = subprocess.Popen([str(az.az), "login", "--use-device-code", "--allow-no-subscriptions"],
                            env=az.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stderr is not None
        line, deadline = "", time.monotonic() + 60
        while "enter the code" not in line and time.monotonic() < deadline:
            line = proc.stderr.readline()
        m = re.search(r"open the page (\S+) and enter the code (\S+)", line)
        assert m, line
        page_url, code = m.group(1), m.group(2)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                        args=["--no-sandbox"])  # fmt: skip
            page = browser.new_context(ignore_https_errors=True).new_page()
            page.goto(page_url)
            page.fill("#code", code)
            page.fill("#username", "trainee1")
            page.fill("#password", "Tr@inee-pass-1")
            page.click("#signin")
            assert "Signed in as trainee1" in page.inner_text("#done")
            browser.close()
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        proc.kill()
    account = json.loads(az("account", "show").stdout)
    assert account["user"] == {"name": "trainee1", "type": "user"}
    assert "azc1" in [v["name"] for v in json.loads(az("vm", "list").stdout)]


def test_without_a_guest_agent_run_command_and_password_reset_say_so(
    cli_lab: CliLab, contributor: Az
) -> None:
    """The tiny image runs no guest agent: `az vm run-command invoke` and `az vm user update`
    reach the lab (their requests are Run Command's and the VM access extension's) and fail
    with Azure's agent error after the lab's bounded wait (5 s in tests), which is the cue to
    use the serial console."""
    vm = ("-g", "it-rg", "-n", "it2")
    run = contributor("vm", "run-command", "invoke", *vm, "--command-id", "RunShellScript",
                      "--scripts", "uname -r", check=False)  # fmt: skip
    assert run.returncode != 0 and "VMAgentStatusCommunicationError" in run.stderr, run.stderr
    assert "did not answer in 5 s" in run.stderr and "serial console" in run.stderr
    reset = contributor("vm", "user", "update", *vm, "-u", "rescue", "-p", "Resc-u3-Only-Here!",
                        check=False)  # fmt: skip
    assert reset.returncode != 0 and "VMAgentStatusCommunicationError" in reset.stderr, (
        reset.stderr)
    assert "Resc-u3-Only-Here!" not in reset.stdout + reset.stderr
    cli_lab.figures["az vm run-command invoke (no agent)"] = run.seconds
