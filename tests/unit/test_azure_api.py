"""The Azure-compatible API over `FakeHypervisor`: RBAC scopes, Microsoft.SerialConsole, the
connect prerequisites, storage accounts, SAS-signed boot-diagnostics blobs."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from lab.api.azure.app import create_azure_app
from lab.api.azure.errors import SasRejected
from lab.api.daemon.schemas import vm_json
from lab.api.security.tokens import issue
from lab.domain.storage_account import StorageAccount
from lab.domain.vm import BootDiagnosticsModel
from lab.hypervisor.fake import FakeHypervisor
from lab.services.lab import Lab
from tests.unit.fakelab import SUBSCRIPTION, banner, new_vm, run

TOKEN_KEY = b"k" * 32
STORAGE_KEY = b"s" * 32
V = "?api-version=2024-07-01"
RG = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg1"
VM1 = f"{RG}/providers/Microsoft.Compute/virtualMachines/vm1"
PORTS = (
    f"/subscriptions/{SUBSCRIPTION}/resourcegroups/rg1/providers/Microsoft.Compute"
    "/virtualMachines/vm1/providers/Microsoft.SerialConsole/serialPorts"
)
SERVICES = (
    f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.SerialConsole/consoleServices/default"
)

Client = httpx.AsyncClient


def token(*roles: tuple[str, str], expires: float = 86400) -> dict[str, str]:
    # A day: module-level tokens are made at import, and the suite may run long before them.
    t = issue(TOKEN_KEY, user="alice", roles=list(roles) or [("Contributor", "/")],
              expires_in=expires)  # fmt: skip
    return {"Authorization": f"Bearer {t}"}


OWNER = token(("Owner", "/"))


def scenario(lab: Lab, body: Callable[[Client], Awaitable[None]], *vms: Any) -> None:
    """Create `vms` (NewVm), then run `body` with a client of the Azure app."""
    app = create_azure_app(lab, TOKEN_KEY, STORAGE_KEY)

    async def go() -> None:
        for vm in vms or (new_vm(),):
            await lab.vms.create(vm)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://lab.test") as c:
            await body(c)

    run(lab, go)


def test_rbac_scopes_decide_reads_and_actions(lab: Lab) -> None:
    in_rg1 = token(("Virtual Machine Contributor", RG))
    reader_vm1 = token(("Reader", VM1))

    async def body(c: Client) -> None:
        assert (await c.get(VM1 + V, headers=in_rg1)).status_code == 200
        vm3 = VM1.replace("/rg1/", "/rg2/").replace("/vm1", "/vm3")
        denied = await c.get(vm3 + V, headers=in_rg1)
        assert denied.status_code == 403
        assert denied.json()["error"]["code"] == "AuthorizationFailed"
        assert "Microsoft.Compute/virtualMachines/read" in denied.json()["error"]["message"]
        # Lists leave out what the caller may not read.
        listed = await c.get(
            f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Compute/virtualMachines{V}",
            headers=reader_vm1,
        )
        assert [v["name"] for v in listed.json()["value"]] == ["vm1"]
        # A Reader on the VM may read, not restart; a missing VM in scope is a 404.
        assert (await c.post(VM1 + "/restart" + V, headers=reader_vm1)).status_code == 403
        missing = await c.get(
            f"{RG}/providers/Microsoft.Compute/virtualMachines/nope{V}", headers=in_rg1
        )
        assert missing.status_code == 404

    scenario(lab, body, new_vm("vm1"), new_vm("vm2"), new_vm("vm3", rg="rg2"))


def test_console_service_switch_persists_and_unknown_subscription_is_flat_404(lab: Lab) -> None:
    async def body(c: Client) -> None:
        assert (await c.get(SERVICES + V, headers=OWNER)).json() == {
            "properties": {"disabled": False}
        }
        cli = await c.get(SERVICES + "?api-version=2018-05-01", headers=OWNER)  # the Azure CLI's
        assert cli.json() == {"properties": {"disabled": False}}
        off = await c.post(SERVICES + "/disableConsole" + V, headers=OWNER)
        assert off.json() == {"properties": {"disabled": True}}
        assert (await c.get(SERVICES + V, headers=OWNER)).json()["properties"]["disabled"] is True
        # A Reader may not flip the switch.
        denied = await c.post(SERVICES + "/enableConsole" + V, headers=token(("Reader", "/")))
        assert denied.status_code == 403
        other = SERVICES.replace(SUBSCRIPTION, "00000000-0000-0000-0000-0000000000aa")
        missing = await c.get(other + V, headers=OWNER)
        assert missing.status_code == 404
        assert missing.json()["code"] == "SubscriptionNotFound"

    scenario(lab, body)
    assert lab.serial_console.disabled(SUBSCRIPTION)  # persisted in the state file
    again = Lab(lab.settings, FakeHypervisor())
    assert again.serial_console.disabled(SUBSCRIPTION)


def test_serial_ports_crud_and_operations(lab: Lab) -> None:
    async def body(c: Client) -> None:
        ops = (
            await c.get("/providers/Microsoft.SerialConsole/operations" + V, headers=OWNER)
        ).json()
        names = [o["name"] for o in ops["value"]]
        assert "Microsoft.SerialConsole/serialPorts/connect/action" in names
        assert all(o["isDataAction"] == "false" for o in ops["value"])
        r0 = await c.get(PORTS + V, headers=OWNER)
        assert r0.status_code == 200, r0.text
        listed = r0.json()["value"]
        assert [p["name"] for p in listed] == ["0"]
        assert listed[0]["properties"] == {"state": "enabled", "connectionState": "inactive"}
        put = await c.put(
            PORTS + "/0" + V, headers=OWNER, json={"properties": {"state": "disabled"}}
        )
        assert put.status_code == 201 and put.json()["properties"]["state"] == "disabled"
        assert (
            put.json()["id"]
            == VM1.replace("resourceGroups", "resourceGroups")
            + "/providers/Microsoft.SerialConsole/serialPorts/0"
        )
        refused = await c.post(PORTS + "/0/connect" + V, headers=OWNER)
        assert (
            refused.status_code == 409 and refused.json()["error"]["code"] == "SerialPortDisabled"
        )
        assert (await c.delete(PORTS + "/0" + V, headers=OWNER)).status_code == 200
        assert (await c.get(PORTS + "/0" + V, headers=OWNER)).status_code == 404
        created = await c.put(
            PORTS + "/0" + V, headers=OWNER, json={"properties": {"state": "enabled"}}
        )
        assert created.status_code == 201
        bad = await c.put(PORTS + "/7" + V, headers=OWNER, json={})
        assert bad.status_code == 400
        # A scale-set parent, in either spelling, is routed (and not found: no scale sets yet).
        vmss = PORTS.replace("virtualMachines/vm1", "virtualMachineScaleSets/ss/virtualMachines/0")
        assert (await c.get(vmss + V, headers=OWNER)).status_code == 404
        quoted = PORTS.replace(
            "virtualMachines/vm1", "virtualMachineScaleSets/ss%2FvirtualMachines%2F0"
        )
        r = await c.get(quoted + V, headers=OWNER)
        assert r.status_code == 404 and "virtualMachineScaleSets/ss" in r.json()["error"]["message"]

    scenario(lab, body)


def test_connect_prerequisites_in_documented_order(lab: Lab) -> None:
    lab.storage_accounts.put(
        StorageAccount(
            subscription_id=SUBSCRIPTION, resource_group="rg1", name="fwdiag", default_action="Deny"
        )
    )
    lab.storage_accounts.put(
        StorageAccount(
            subscription_id=SUBSCRIPTION,
            resource_group="rg1",
            name="nokeydiag",
            allow_shared_key_access=False,
        )
    )

    def bd(account: str | None, enabled: bool = True) -> BootDiagnosticsModel:
        uri = f"https://{account}.blob.core.windows.net/" if account else None
        return BootDiagnosticsModel(enabled=enabled, storage_uri=uri, storage_account=account)

    def connect(c: Client, vm: str, headers: dict[str, str] = OWNER) -> Awaitable[httpx.Response]:
        return c.post(PORTS.replace("/vm1/", f"/{vm}/") + "/0/connect" + V, headers=headers)

    async def body(c: Client) -> None:
        ok = await connect(c, "vm1")
        assert ok.status_code == 200
        cs = ok.json()["connectionString"]
        assert cs.startswith("wss://lab.test/n/connector/serialconsole/sessions/") and cs.endswith(
            "/client"
        )
        for vm, status, code in [
            ("nobd", 400, "BootDiagnosticsDisabled"),
            ("fw", 403, "StorageAccountForbidden"),
            ("nokey", 403, "KeyBasedAuthenticationNotPermitted"),
            ("gone", 400, "StorageAccountNotFound"),
        ]:
            r = await connect(c, vm)
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), vm
        reader = await connect(c, "vm1", token(("Reader", "/")))
        assert reader.status_code == 403 and reader.json()["error"]["code"] == "AuthorizationFailed"
        await c.post(SERVICES + "/disableConsole" + V, headers=OWNER)
        disabled = await connect(c, "vm1")
        assert disabled.status_code == 403
        assert "not enabled for this subscription" in disabled.json()["error"]["message"]
        await c.post(SERVICES + "/enableConsole" + V, headers=OWNER)
        await c.post(VM1 + "/powerOff" + V + "&skipShutdown=true", headers=OWNER)
        for _ in range(100):
            if (await connect(c, "vm1")).status_code == 409:
                break
        stopped = await connect(c, "vm1")
        assert stopped.status_code == 409 and stopped.json()["error"]["code"] == "VmNotRunning"

    scenario(lab, body, new_vm("vm1"), new_vm("nobd", boot_diagnostics=bd(None, enabled=False)),
             new_vm("fw", boot_diagnostics=bd("fwdiag")),
             new_vm("nokey", boot_diagnostics=bd("nokeydiag")),
             new_vm("gone", boot_diagnostics=bd("missingdiag")))  # fmt: skip


def test_sessions_are_single_use_and_bound_to_their_user(lab: Lab) -> None:
    async def body(c: Client) -> None:
        view = lab.lookup.vm("vm1")
        alice = lab.serial_console.connect(view, "0", "oid-alice")
        with pytest.raises(Exception, match=r"already used|not found"):
            lab.serial_console.open(alice.id, "oid-bob")
        lab.serial_console.open(alice.id, "oid-alice")
        with pytest.raises(Exception, match="already used"):
            lab.serial_console.open(alice.id, "oid-alice")
        assert lab.serial_console.live(alice.id, "oid-alice") is alice
        lab.serial_console.close(alice)
        with pytest.raises(Exception, match="has ended"):
            lab.serial_console.live(alice.id, "oid-alice")

    scenario(lab, body)


def test_unopened_sessions_expire(lab: Lab) -> None:
    now = [1000.0]
    lab.serial_console.clock = lambda: now[0]

    async def body(c: Client) -> None:
        s = lab.serial_console.connect(lab.lookup.vm("vm1"), "0", "oid")
        now[0] += 61
        with pytest.raises(Exception, match="expired"):
            lab.serial_console.open(s.id, "oid")

    scenario(lab, body)


def test_boot_diagnostics_data_sas_blob_download_and_range(lab: Lab, hv: FakeHypervisor) -> None:
    async def body(c: Client) -> None:
        r = await c.post(
            VM1 + "/retrieveBootDiagnosticsData" + V + "&sasUriExpirationTimeInMinutes=5",
            headers=token(("Virtual Machine Contributor", VM1)),
        )
        assert r.status_code == 200, r.text
        uri = r.json()["serialConsoleLogBlobUri"]
        parts = urlsplit(uri)
        assert "sig=" in parts.query and "se=" in parts.query
        full = await c.get(parts.path + "?" + parts.query)
        assert full.status_code == 200 and full.content.startswith(banner()[:10])
        part = await c.get(parts.path + "?" + parts.query, headers={"x-ms-range": "bytes=0-3"})
        assert part.status_code == 206 and part.content == full.content[:4]
        assert part.headers["content-range"] == f"bytes 0-3/{len(full.content)}"
        tampered = parts.query.replace("sp=r", "sp=rw")
        bad = await c.get(parts.path + "?" + tampered)
        assert bad.status_code == 403 and bad.headers["x-ms-error-code"] == "AuthenticationFailed"
        other = parts.path.replace("serialconsole.log", "screenshot.bmp")
        assert (await c.get(other + "?" + parts.query)).status_code == 403  # signed for the log
        shot = urlsplit(r.json()["consoleScreenshotBlobUri"])
        bmp = await c.get(shot.path + "?" + shot.query)
        assert bmp.status_code == 200 and bmp.content[:2] == b"BM"
        for bad_minutes in ("0", "1441", "x"):
            q = await c.post(
                VM1
                + "/retrieveBootDiagnosticsData"
                + V
                + f"&sasUriExpirationTimeInMinutes={bad_minutes}",
                headers=OWNER,
            )
            assert (
                q.status_code == 400
                and q.json()["error"]["target"] == "sasUriExpirationTimeInMinutes"
            )

    scenario(lab, body)


def test_expired_sas_is_refused() -> None:
    from datetime import UTC, datetime, timedelta
    from urllib.parse import parse_qsl

    from lab.api.security import sas

    q = dict(parse_qsl(sas.sign(STORAGE_KEY, "acct", "cont", "b.log", minutes=1)))
    sas.verify(STORAGE_KEY, "acct", "cont", "b.log", q)
    later = datetime.now(UTC) + timedelta(minutes=2)
    with pytest.raises(SasRejected, match="Signed expiry time"):
        sas.verify(STORAGE_KEY, "acct", "cont", "b.log", q, now=later)
    with pytest.raises(SasRejected, match="Signature did not match"):
        sas.verify(STORAGE_KEY, "acct", "cont", "other.log", q)


def test_storage_accounts_put_get_list(lab: Lab) -> None:
    sa = f"{RG}/providers/Microsoft.Storage/storageAccounts"

    async def body(c: Client) -> None:
        put = await c.put(
            sa + "/newdiag" + V,
            headers=OWNER,
            json={
                "location": "westeurope",
                "properties": {
                    "allowSharedKeyAccess": False,
                    "networkAcls": {"defaultAction": "Deny"},
                },
            },
        )
        assert put.status_code == 201, put.text
        got = (await c.get(sa + "/newdiag" + V, headers=OWNER)).json()
        assert got["properties"]["allowSharedKeyAccess"] is False
        assert got["properties"]["networkAcls"]["defaultAction"] == "Deny"
        again = await c.put(sa + "/newdiag" + V, headers=OWNER, json={"location": "westeurope"})
        assert (
            again.status_code == 200 and again.json()["properties"]["allowSharedKeyAccess"] is False
        )
        listed = (await c.get(sa + V, headers=OWNER)).json()["value"]
        assert [a["name"] for a in listed] == ["newdiag"]
        bad = await c.put(sa + "/Bad_Name" + V, headers=OWNER, json={"location": "westeurope"})
        assert bad.status_code == 400 and "storage account name" in bad.json()["error"]["message"]
        taken = await c.put(
            sa.replace("rg1", "rg2") + "/newdiag" + V,
            headers=OWNER,
            json={"location": "westeurope"},
        )
        assert taken.status_code == 409
        assert (
            await c.put(
                sa + "/x1diag" + V, headers=token(("Reader", "/")), json={"location": "westeurope"}
            )
        ).status_code == 403

    scenario(lab, body)


def _vm_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "location": "westeurope",
        "tags": {"made": "by-put"},
        "properties": {
            "hardwareProfile": {"vmSize": "Lab_1vCPU_256MiB"},
            "storageProfile": {"imageReference": {"publisher": "SerialConsoleLab",
                                                  "offer": "tiny", "sku": "tiny",
                                                  "version": "latest"}},
            "osProfile": {"computerName": "made", "adminUsername": "azureuser",
                          "adminPassword": "Passw0rd!"},
            "diagnosticsProfile": {"bootDiagnostics": {"enabled": True}},
        },
    }  # fmt: skip
    body.update(over)
    return body


async def _settle(c: Client, response: httpx.Response) -> str:
    """Poll a long-running operation to its end; return its status."""
    url = response.headers["azure-asyncoperation"]
    for _ in range(200):
        status = (await c.get(url, headers=OWNER)).json()["status"]
        if status != "InProgress":
            return str(status)
        import asyncio

        await asyncio.sleep(0.02)
    raise AssertionError("operation did not finish")


def test_put_creates_patch_updates_delete_removes(lab: Lab, hv: FakeHypervisor) -> None:
    made = f"{RG}/providers/Microsoft.Compute/virtualMachines/made"

    async def body(c: Client) -> None:
        r = await c.put(made + V, headers=OWNER, json=_vm_body())
        assert r.status_code == 201, r.text
        assert r.json()["properties"]["provisioningState"] == "Creating"
        assert "adminPassword" not in r.text
        assert await _settle(c, r) == "Succeeded"
        got = (await c.get(made + V + "&$expand=instanceView", headers=OWNER)).json()
        assert got["tags"] == {"made": "by-put"}
        assert got["properties"]["hardwareProfile"]["vmSize"] == "Lab_1vCPU_256MiB"
        assert "PowerState/running" in [
            s["code"] for s in got["properties"]["instanceView"]["statuses"]
        ]
        # PATCH: tags and boot diagnostics may change; the size may not.
        p = await c.patch(
            made + V,
            headers=OWNER,
            json={
                "tags": {"t": "2"},
                "properties": {"diagnosticsProfile": {"bootDiagnostics": {"enabled": False}}},
            },
        )
        assert p.status_code == 200, p.text
        assert p.json()["tags"] == {"t": "2"}
        assert p.json()["properties"]["diagnosticsProfile"]["bootDiagnostics"]["enabled"] is False
        resized = _vm_body()
        resized["properties"]["hardwareProfile"]["vmSize"] = "Lab_2vCPU_512MiB"
        refused = await c.put(made + V, headers=OWNER, json=resized)
        assert (
            refused.status_code == 409
            and refused.json()["error"]["code"] == "PropertyChangeNotAllowed"
        )
        http = await c.patch(
            made + V,
            headers=OWNER,
            json={
                "properties": {
                    "diagnosticsProfile": {
                        "bootDiagnostics": {
                            "enabled": True,
                            "storageUri": "http://x1diag.blob.core.windows.net/",
                        }
                    }
                }
            },
        )
        assert http.status_code == 400 and "must be https" in http.json()["error"]["message"]
        d = await c.delete(made + V, headers=OWNER)
        assert d.status_code == 202 and await _settle(c, d) == "Succeeded"
        assert (await c.get(made + V, headers=OWNER)).status_code == 404
        assert (await c.delete(made + V, headers=OWNER)).status_code == 204

    scenario(lab, body)


@pytest.mark.parametrize(
    ("change", "target", "words"),
    [
        (
            lambda b: b["properties"]["osProfile"].pop("adminPassword"),
            "properties.osProfile.adminPassword",
            "required",
        ),
        (
            lambda b: b["properties"]["osProfile"].update(adminPassword="short"),
            "properties.osProfile.adminPassword",
            "password",
        ),
        (
            lambda b: b["properties"]["storageProfile"]["imageReference"].update(
                offer="nosuch", sku="nosuch"
            ),
            "properties.storageProfile.imageReference",
            "not a known image",
        ),
        (
            lambda b: b["properties"]["hardwareProfile"].update(vmSize="Standard_Nope"),
            "properties.hardwareProfile.vmSize",
            "Standard_Nope",
        ),
        (
            lambda b: b["properties"]["diagnosticsProfile"]["bootDiagnostics"].update(
                storageUri="https://nodiag.blob.core.windows.net/"
            ),
            "properties.diagnosticsProfile",
            "not found",
        ),
        (lambda b: b.pop("location"), "location", "location"),
    ],
)
def test_put_refuses_bad_bodies_with_a_located_error(
    lab: Lab, change: Any, target: str, words: str
) -> None:
    async def body(c: Client) -> None:
        bad = _vm_body()
        change(bad)
        r = await c.put(
            f"{RG}/providers/Microsoft.Compute/virtualMachines/bad{V}", headers=OWNER, json=bad
        )
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["target"] == target and words.lower() in err["message"].lower(), err
        assert lab.vms.list() == [] or all(v.identity.name != "bad" for v in lab.vms.list())

    scenario(lab, body)


def test_a_full_disk_is_a_clear_507_and_changes_nothing(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    sa = f"{RG}/providers/Microsoft.Storage/storageAccounts"
    state = lab.settings.state_dir / "resources.json"

    def full(path: Path, *_a: object, **_k: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    async def body(c: Client) -> None:
        first = await c.put(sa + "/keptdiag" + V, headers=OWNER, json={"location": "westeurope"})
        assert first.status_code == 201
        before = state.read_bytes()
        monkeypatch.setattr("lab.storage.state.write_atomic", full)
        r = await c.put(sa + "/newdiag" + V, headers=OWNER, json={"location": "westeurope"})
        assert r.status_code == 507, r.text
        err = r.json()["error"]
        assert err["code"] == "InsufficientStorage"
        assert f"writing {state}" in err["message"] and "free some space" in err["message"]
        assert r.headers["x-ms-request-id"]
        assert state.read_bytes() == before
        listed = (await c.get(sa + V, headers=OWNER)).json()["value"]
        assert [a["name"] for a in listed] == ["keptdiag"]  # not half-added in memory either

    scenario(lab, body)


LOCKUP = b"[ 250.1] watchdog: BUG: soft lockup - CPU#1 stuck for 224s! [ssh-keygen:252]\r\n"


async def hang_shown(lab: Lab) -> Any:
    """The VM once the lab has read the hang sign from its log (the broker follows the log)."""
    for _ in range(100):
        view = (await lab.vms.list_now())[0]
        if view.hang is not None:
            return view
        await asyncio.sleep(0.05)
    raise AssertionError("the soft lockup never showed on the VM")


def test_a_hung_guest_is_a_warning_in_lab_ls_and_the_instance_view_until_a_reset(
    lab: Lab, hv: FakeHypervisor
) -> None:
    async def body(c: Client) -> None:
        view = (await lab.vms.list_now())[0]
        r = await c.get(VM1 + "/instanceView" + V, headers=OWNER)
        assert "vmHealth" not in r.json() and vm_json(view)["warning"] is None
        hv.guest_output(view.identity.domain_name, LOCKUP)
        hung = await hang_shown(lab)
        assert vm_json(hung)["warning"] == (
            "the guest is hung: a soft lockup (watchdog: BUG: soft lockup - CPU#1 stuck for "
            "224s! [ssh-keygen:252])")  # fmt: skip
        health = (await c.get(VM1 + "/instanceView" + V, headers=OWNER)).json()["vmHealth"]
        assert health["status"]["code"] == "HealthState/unhealthy"
        assert health["status"]["level"] == "Warning"
        assert "soft lockup - CPU#1 stuck for 224s" in health["status"]["message"]
        assert health["status"]["time"].endswith("Z")
        # A new boot: the warning is history, in the reset's own answer already (before the
        # guest has printed anything of its new boot).
        assert (await lab.vms.reset(hung)).hang is None
        r = await c.get(VM1 + "/instanceView" + V, headers=OWNER)
        assert "vmHealth" not in r.json()
        assert (await lab.vms.list_now())[0].hang is None

    scenario(lab, body)


def test_an_operation_in_progress_tells_the_poller_when_to_ask_again(
    lab: Lab, hv: FakeHypervisor
) -> None:
    # Without Retry-After on the status the SDK's poller waits its default 30 s between polls,
    # for an operation that takes a second.
    async def body(c: Client) -> None:
        view = (await lab.vms.list_now())[0]
        hv.set_ignore_acpi(view.identity.domain_name)  # powerOff waits the shutdown timeout
        r = await c.post(VM1 + "/powerOff" + V, headers=OWNER)
        assert r.status_code == 202 and r.headers["retry-after"] == "1"
        status = await c.get(r.headers["azure-asyncoperation"], headers=OWNER)
        assert status.json()["status"] == "InProgress"
        assert status.headers["retry-after"] == "1"
        assert await _settle(c, r) == "Succeeded"
        done = await c.get(r.headers["azure-asyncoperation"], headers=OWNER)
        assert "retry-after" not in done.headers

    scenario(lab, body)


def test_vm_actions_in_any_case_and_the_scale_set_filter(lab: Lab) -> None:
    """ARM takes `poweroff` as `powerOff` (the scale sets did already); `az vm list --vmss`
    sends a `$filter` that keeps no VM of a Uniform set, and another filter is a clear 400."""
    vms = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg1/providers/Microsoft.Compute"
           "/virtualMachines")  # fmt: skip
    version = {"api-version": "2024-07-01"}

    async def body(c: Client) -> None:
        r = await c.post(VM1 + "/POWEROFF" + V + "&skipShutdown=true", headers=OWNER)
        assert r.status_code == 202, r.text
        assert (await c.post(VM1 + "/Start" + V, headers=OWNER)).status_code in (202, 409)
        assert (await c.post(VM1 + "/explode" + V, headers=OWNER)).status_code == 404
        listed = await c.get(vms + V, headers=OWNER)
        assert [v["name"] for v in listed.json()["value"]] == ["vm1"]
        ss = vms.replace("virtualMachines", "virtualMachineScaleSets/ss1")
        filtered = await c.get(vms, headers=OWNER, params={
            **version, "$filter": f"'virtualMachineScaleSet/id' eq '{ss}'"})  # fmt: skip
        assert filtered.status_code == 200 and filtered.json()["value"] == []
        bad = await c.get(vms, headers=OWNER, params={**version, "$filter": "name eq 'vm1'"})
        assert bad.status_code == 400 and "virtualMachineScaleSet/id" in bad.text

    scenario(lab, body)


def test_gateway_session_ids_survive_the_extensions_ws_replace(lab: Lab) -> None:
    """The CLI extension makes its admin URL with `url.replace("ws", "http")`: no id may hold
    "ws" (2,000 ids: with base64url ids, about 12 would have)."""

    async def body(c: Client) -> None:
        view = lab.lookup.vm("vm1")
        ids = [lab.serial_console.connect(view, "0", "oid").id for _ in range(2000)]
        assert len(set(ids)) == 2000 and not [i for i in ids if "ws" in i.lower()]

    scenario(lab, body)


def test_redeploy_is_its_own_operation_and_powers_a_stopped_vm_on(lab: Lab) -> None:
    """Azure's redeploy moves a VM to a new host and powers it on, from any state: on one host
    a new QEMU process. (It was a power-cycle, refused for a stopped VM.)"""

    async def body(c: Client) -> None:
        off = await c.post(VM1 + "/powerOff" + V + "&skipShutdown=true", headers=OWNER)
        assert await _settle(c, off) == "Succeeded"
        assert lab.lookup.vm("vm1").power_state.value == "stopped"
        again = await c.post(VM1 + "/Redeploy" + V, headers=OWNER)
        assert again.status_code == 202 and await _settle(c, again) == "Succeeded"
        assert lab.lookup.vm("vm1").power_state.value == "running"

    scenario(lab, body)


@pytest.mark.parametrize(
    ("change", "generation"),
    [
        (lambda b: None, "V1"),
        # A generation 2 SKU, as `az vm create --image P:debian:debian-gen2:latest` sends.
        (lambda b: b["properties"]["storageProfile"]["imageReference"].update(sku="tiny-gen2"),
         "V2"),
        (lambda b: b["properties"]["storageProfile"]["imageReference"].update(
            offer=None, sku="tiny-Gen2"), "V2"),
        # Trusted Launch is a generation 2 VM (what `az vm create` asks for by default).
        (lambda b: b["properties"].update(securityProfile={
            "securityType": "TrustedLaunch",
            "uefiSettings": {"secureBootEnabled": True, "vTpmEnabled": True}}), "V2"),
        (lambda b: b["properties"].update(securityProfile={"securityType": "Standard"}), "V1"),
    ],
)
def test_a_generation_2_vm_boots_uefi_and_says_so(
    lab: Lab, hv: FakeHypervisor, change: Any, generation: str
) -> None:
    """The image's SKU or Trusted Launch makes a generation 2 VM: OVMF in its domain, V2 in
    its instance view, and a `-gen2` SKU in its GET, so a GET put back makes the same VM."""
    made = f"{RG}/providers/Microsoft.Compute/virtualMachines/gen"

    async def body(c: Client) -> None:
        put = _vm_body()
        change(put)
        r = await c.put(made + V, headers=OWNER, json=put)
        assert r.status_code == 201, r.text
        assert await _settle(c, r) == "Succeeded"
        got = (await c.get(made + V + "&$expand=instanceView", headers=OWNER)).json()
        assert got["properties"]["instanceView"]["hyperVGeneration"] == generation
        sku = got["properties"]["storageProfile"]["imageReference"]["sku"]
        assert sku == ("tiny-gen2" if generation == "V2" else "tiny")
        [name] = {n for op, n in hv.calls if n.endswith("+gen")}
        assert ("OVMF_CODE" in hv.xml(name)) == (generation == "V2")

    scenario(lab, body)


def test_a_confidential_vm_is_refused_by_name(lab: Lab) -> None:
    async def body(c: Client) -> None:
        put = _vm_body()
        put["properties"]["securityProfile"] = {"securityType": "ConfidentialVM"}
        r = await c.put(f"{RG}/providers/Microsoft.Compute/virtualMachines/cvm{V}",
                        headers=OWNER, json=put)  # fmt: skip
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["target"] == "properties.securityProfile.securityType"
        assert "ConfidentialVM" in err["message"] and "TrustedLaunch" in err["message"]

    scenario(lab, body)
