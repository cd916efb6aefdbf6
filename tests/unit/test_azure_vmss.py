"""virtualMachineScaleSets over `FakeHypervisor`: the set's lifecycle, instances, model
upgrades, per-instance actions, boot diagnostics and serial ports."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import httpx

from lab.services.lab import Lab
from tests.unit.test_azure_api import OWNER, RG, Client, V, scenario, token

SS = f"{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/web"


def body(capacity: int = 2, **profile_extra: Any) -> dict[str, Any]:
    return {
        "location": "westeurope",
        "sku": {"name": "Lab_1vCPU_256MiB", "capacity": capacity},
        "properties": {
            "upgradePolicy": {"mode": "Manual"},
            "virtualMachineProfile": {
                "osProfile": {"computerNamePrefix": "web", "adminUsername": "azureuser",
                              "adminPassword": "Passw0rd!"},
                "storageProfile": {"imageReference": {"offer": "tiny", "sku": "tiny"}},
                "diagnosticsProfile": {"bootDiagnostics": {"enabled": True}},
                **profile_extra,
            },
        },
    }  # fmt: skip


async def settle(c: Client, r: httpx.Response) -> str:
    assert r.status_code in (200, 201, 202), r.text
    url = r.headers["azure-asyncoperation"]
    for _ in range(300):
        status = (await c.get(url, headers=OWNER)).json()
        if status["status"] != "InProgress":
            assert status["status"] == "Succeeded", status
            return str(status["status"])
        await asyncio.sleep(0.02)
    raise AssertionError("operation did not finish")


def test_scale_set_lifecycle_through_the_api(lab: Lab) -> None:
    async def go(c: Client) -> None:
        await settle(c, await c.put(SS + V, headers=OWNER, json=body(2)))
        got = (await c.get(SS + V, headers=OWNER)).json()
        assert (
            got["sku"]["capacity"] == 2 and got["properties"]["upgradePolicy"]["mode"] == "Manual"
        )
        vms = (await c.get(SS + "/virtualMachines" + V, headers=OWNER)).json()["value"]
        assert [(v["name"], v["instanceId"]) for v in vms] == [("web_0", "0"), ("web_1", "1")]
        assert vms[1]["properties"]["osProfile"]["computerName"] == "web000001"
        assert all(v["properties"]["latestModelApplied"] for v in vms)
        # Lowercase `virtualmachines`, as parts of the spec spell it.
        one = (
            await c.get(SS + "/virtualmachines/1" + V + "&$expand=instanceView", headers=OWNER)
        ).json()
        assert "PowerState/running" in [
            s["code"] for s in one["properties"]["instanceView"]["statuses"]
        ]
        # Scale out with PATCH, change the model with PUT: instances fall behind.
        await settle(c, await c.patch(SS + V, headers=OWNER, json={"sku": {"capacity": 3}}))
        assert len((await c.get(SS + "/virtualMachines" + V, headers=OWNER)).json()["value"]) == 3
        await settle(
            c,
            await c.put(
                SS + V,
                headers=OWNER,
                json=body(3, osProfile={"computerNamePrefix": "web", "adminUsername": "azureuser"})
                | {"tags": {"v": "2"}},
            ),
        )
        new_model = body(3)
        new_model["properties"]["virtualMachineProfile"]["diagnosticsProfile"]["bootDiagnostics"][
            "enabled"
        ] = False
        await settle(c, await c.put(SS + V, headers=OWNER, json=new_model))
        applied = [
            v["properties"]["latestModelApplied"]
            for v in (await c.get(SS + "/virtualMachines" + V, headers=OWNER)).json()["value"]
        ]
        assert applied == [False, False, False]
        await settle(
            c, await c.post(SS + "/manualupgrade" + V, headers=OWNER, json={"instanceIds": ["2"]})
        )
        applied = [
            v["properties"]["latestModelApplied"]
            for v in (await c.get(SS + "/virtualMachines" + V, headers=OWNER)).json()["value"]
        ]
        assert applied == [False, False, True]
        # Set action on some instances, then one instance's own action.
        await settle(
            c,
            await c.post(
                SS + "/poweroff" + V + "&skipShutdown=true",
                headers=OWNER,
                json={"instanceIds": ["0"]},
            ),
        )
        assert (
            lab.scale_sets.instance(lab.scale_sets.get("rg1", "web"), "0").power_state.value
            == "stopped"
        )
        refused = await c.post(SS + "/virtualMachines/0/restart" + V, headers=OWNER)
        assert refused.status_code == 409  # a stopped instance cannot restart
        await settle(c, await c.post(SS + "/virtualMachines/0/start" + V, headers=OWNER))
        bd = await c.post(SS + "/virtualMachines/1/retrieveBootDiagnosticsData" + V, headers=OWNER)
        assert "web_1." in bd.json()["serialConsoleLogBlobUri"]
        # Serial ports and connect under an instance, in both spellings of the parent.
        ports = (
            SS.replace("resourceGroups", "resourcegroups")
            + "/virtualMachines/1/providers/Microsoft.SerialConsole/serialPorts"
        )
        assert (await c.get(ports + V, headers=OWNER)).json()["value"][0]["name"] == "0"
        quoted = ports.replace("web/virtualMachines/1", "web%2FvirtualMachines%2F1")
        cs = (await c.post(quoted + "/0/connect" + V, headers=OWNER)).json()["connectionString"]
        assert cs.startswith("wss://")
        # Scale in by deleting an instance, then delete the set.
        await settle(c, await c.delete(SS + "/virtualMachines/2" + V, headers=OWNER))
        assert lab.scale_sets.get("rg1", "web").capacity == 2
        await settle(c, await c.delete(SS + V, headers=OWNER))
        assert (await c.get(SS + V, headers=OWNER)).status_code == 404
        assert [v.identity.name for v in lab.vms.machines()] == ["vm1"]  # the scenario's VM

    scenario(lab, go)


def test_scale_set_errors(lab: Lab) -> None:
    async def go(c: Client) -> None:
        bad = body(2)
        del bad["properties"]["virtualMachineProfile"]["osProfile"]["adminPassword"]
        r = await c.put(SS + V, headers=OWNER, json=bad)
        assert r.status_code == 400
        assert (
            r.json()["error"]["target"]
            == "properties.virtualMachineProfile.osProfile.adminPassword"
        )
        r = await c.put(SS + V, headers=OWNER, json=body(99))
        assert r.status_code == 400 and r.json()["error"]["target"] == "sku.capacity"
        reader = token(("Reader", "/"))
        assert (await c.put(SS + V, headers=reader, json=body(1))).status_code == 403
        assert (await c.get(SS + V, headers=OWNER)).status_code == 404
        await settle(c, await c.put(SS + V, headers=OWNER, json=body(1)))
        missing = await c.post(SS + "/restart" + V, headers=OWNER, json={"instanceIds": ["7"]})
        assert missing.status_code == 404
        no_ids = await c.post(SS + "/manualupgrade" + V, headers=OWNER, json={})
        assert no_ids.status_code == 400

    scenario(lab, go)


def _verifies(password: str, hashed: str) -> bool:
    salt = hashed.split("$")[2]
    again = subprocess.run(
        ["openssl", "passwd", "-6", "-salt", salt, "-stdin"],
        input=password + "\n", capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return again == hashed


def test_the_set_keeps_the_hash_of_its_password_across_updates(lab: Lab) -> None:
    """The lab keeps only the hash: a PUT or a PATCH without a password keeps it (and the
    instances made later get it), a PUT with one replaces it."""

    async def go(c: Client) -> None:
        await settle(c, await c.put(SS + V, headers=OWNER, json=body(1)))
        first = lab.scale_sets.get("rg1", "web").admin_password_hash
        assert _verifies("Passw0rd!", first)
        no_password = body(2)
        del no_password["properties"]["virtualMachineProfile"]["osProfile"]["adminPassword"]
        await settle(c, await c.put(SS + V, headers=OWNER, json=no_password))
        await settle(c, await c.patch(SS + V, headers=OWNER, json={"sku": {"capacity": 3}}))
        assert lab.scale_sets.get("rg1", "web").admin_password_hash == first
        instances = lab.scale_sets.instances(lab.scale_sets.get("rg1", "web"))
        assert len(instances) == 3
        for view in instances:
            initrd = (lab.ctx.vm_dir(view.identity) / "initrd.img").read_bytes()
            assert first.encode() in initrd and b"Passw0rd!" not in initrd
        changed = body(3)
        changed["properties"]["virtualMachineProfile"]["osProfile"]["adminPassword"] = "N3w-pass!"
        await settle(c, await c.put(SS + V, headers=OWNER, json=changed))
        assert _verifies("N3w-pass!", lab.scale_sets.get("rg1", "web").admin_password_hash)

    scenario(lab, go)
