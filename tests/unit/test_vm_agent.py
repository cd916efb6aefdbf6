"""The VM agent's functions over `FakeHypervisor`'s guest agent: the VM access extension's
password reset and Run Command, in Azure's shapes; refusals that say what is wrong; an agent
that does not answer fails as Azure's does, after a bounded wait; no password anywhere."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from lab.domain.errors import InvalidInput
from lab.domain.vm_agent import run_command_request, vmaccess_request
from lab.hypervisor.fake import FakeHypervisor
from lab.services.lab import Lab
from tests.unit.test_azure_api import OWNER, VM1, Client, V, _settle, scenario, token

EXT = f"{VM1}/extensions/VMAccessForLinux"
NEW_PASSWORD = "N3w-Secret-Pass!"
VMACCESS = {
    "location": "westeurope",
    "properties": {
        "publisher": "Microsoft.OSTCExtensions", "type": "VMAccessForLinux",
        "typeHandlerVersion": "1.5", "autoUpgradeMinorVersion": True, "settings": {},
        "protectedSettings": {"username": "rescue", "password": NEW_PASSWORD},
    },
}  # fmt: skip


def _domain(lab: Lab) -> str:
    return lab.vms.list()[0].identity.domain_name


async def _done(c: Client, r: httpx.Response) -> dict[str, Any]:
    assert await _settle(c, r) in ("Succeeded", "Failed")
    return dict((await c.get(r.headers["azure-asyncoperation"], headers=OWNER)).json())


def test_vmaccess_resets_a_password_through_the_agent(lab: Lab, hv: FakeHypervisor) -> None:
    async def body(c: Client) -> None:
        agent = hv.start_agent(_domain(lab))
        r = await c.put(EXT + V, json=VMACCESS, headers=OWNER)
        assert r.status_code == 201, r.text
        assert r.json()["properties"]["provisioningState"] == "Creating"
        assert (await _done(c, r))["status"] == "Succeeded"
        assert agent.passwords == {"rescue": NEW_PASSWORD}
        # The user is made first if new, in the admin group, its name an argument.
        assert agent.execs[-1][-1] == "rescue" and "useradd" in agent.execs[-1][2]
        got = (await c.get(EXT + V + "&$expand=instanceView", headers=OWNER)).json()
        assert got["properties"]["provisioningState"] == "Succeeded"
        assert got["properties"]["instanceView"]["statuses"][0]["code"] == (
            "ProvisioningState/succeeded")
        view = (await c.get(VM1 + "/instanceView" + V, headers=OWNER)).json()
        assert view["extensions"][0]["type"] == "Microsoft.OSTCExtensions.VMAccessForLinux"
        again = await c.put(EXT + V, json=VMACCESS, headers=OWNER)
        assert again.status_code == 200
        await _done(c, again)
        listed = (await c.get(f"{VM1}/extensions{V}", headers=OWNER)).json()["value"]
        assert [e["name"] for e in listed] == ["VMAccessForLinux"]
        everything = json.dumps([got, view, listed]) + lab.vm_agent.state.path.read_text()
        assert NEW_PASSWORD not in everything, "a protected setting never comes back"
        assert (await c.delete(EXT + V, headers=OWNER)).status_code == 200
        assert (await c.delete(EXT + V, headers=OWNER)).status_code == 204
        assert (await c.get(EXT + V, headers=OWNER)).status_code == 404

    scenario(lab, body)


def test_run_command_returns_the_scripts_output_in_azures_shape(
    lab: Lab, hv: FakeHypervisor
) -> None:
    async def body(c: Client) -> None:
        agent = hv.start_agent(_domain(lab))
        agent.run = lambda argv: (0, b"6.1.0-57-cloud-amd64\n", b"")
        request = {"commandId": "RunShellScript", "script": ["uname -r"],
                   "parameters": [{"name": "WHO", "value": "x"}]}  # fmt: skip
        r = await c.post(f"{VM1}/runCommand{V}", json=request, headers=OWNER)
        assert r.status_code == 202
        status = await _done(c, r)
        value = status["properties"]["output"]["value"][0]
        assert value["code"] == "ProvisioningState/succeeded"
        out = "Enable succeeded: \n[stdout]\n6.1.0-57-cloud-amd64\n\n[stderr]\n"
        assert value["message"] == out
        result = await c.get(r.headers["location"], headers=OWNER)
        assert result.status_code == 200 and result.json()["value"][0] == value
        assert agent.execs[-1] == ["/bin/sh", "-c", "uname -r\n"]
        agent.run = lambda argv: (3, b"", b"no\n")
        r = await c.post(f"{VM1}/runCommand{V}", json=request, headers=OWNER)
        failed = (await _done(c, r))["properties"]["output"]["value"][0]
        assert failed["code"] == "ProvisioningState/failed"
        assert "exit status=3" in failed["message"] and "[stderr]\nno\n" in failed["message"]

    scenario(lab, body)


def test_no_agent_fails_as_azure_says_after_a_bounded_wait(lab: Lab) -> None:
    lab.vm_agent.wait_s = 0.3

    async def body(c: Client) -> None:
        run = {"commandId": "RunShellScript", "script": ["true"]}
        r = await c.post(f"{VM1}/runCommand{V}", json=run, headers=OWNER)
        status = await _done(c, r)
        assert status["status"] == "Failed"
        assert status["error"]["code"] == "VMAgentStatusCommunicationError"
        assert "did not answer in 0.3 s" in status["error"]["message"]
        r = await c.put(EXT + V, json=VMACCESS, headers=OWNER)
        assert (await _done(c, r))["error"]["code"] == "VMAgentStatusCommunicationError"
        got = (await c.get(EXT + V, headers=OWNER)).json()
        assert got["properties"]["provisioningState"] == "Failed"

    scenario(lab, body)


def test_only_what_may_run_commands_runs_them(lab: Lab) -> None:
    reader = token(("Reader", "/"))

    async def body(c: Client) -> None:
        r = await c.post(f"{VM1}/runCommand{V}", json={"commandId": "RunShellScript"},
                         headers=reader)  # fmt: skip
        assert r.status_code == 403
        assert "Microsoft.Compute/virtualMachines/runCommand/action" in r.text
        r = await c.put(EXT + V, json=VMACCESS, headers=reader)
        assert r.status_code == 403 and "extensions/write" in r.text
        # Bodies that are not what Azure takes: a clear 400, never a 500.
        for bad in (b"{not json", b"[]", b'{"properties": {"settings": [1]}}'):
            r = await c.put(EXT + V, content=bad, headers=OWNER)
            assert r.status_code == 400, r.text
            r = await c.post(f"{VM1}/runCommand{V}", content=bad, headers=OWNER)
            assert r.status_code == 400, r.text

    scenario(lab, body)


@pytest.mark.parametrize(("publisher", "kind", "protected", "words"), [
    ("Microsoft.Azure.Extensions", "CustomScript", {}, "runs one extension"),
    ("Microsoft.OSTCExtensions", "VMAccessForLinux", {"username": "u", "ssh_key": "k"},
     "does not do 'ssh_key'"),
    ("Microsoft.OSTCExtensions", "VMAccessForLinux", {"username": "u"}, "needs 'username' and"),
    ("Microsoft.OSTCExtensions", "VMAccessForLinux", {"username": "root", "password": "x"},
     "reserves"),
])  # fmt: skip
def test_bad_extension_requests_say_what_is_wrong(publisher: str, kind: str, protected: Any,
                                                  words: str) -> None:  # fmt: skip
    with pytest.raises(InvalidInput, match=words) as refused:
        vmaccess_request(publisher, kind, protected)
    assert "x" not in str(refused.value).split("'")[1:2], "no password in the message"


def test_bad_run_commands_say_what_is_wrong() -> None:
    with pytest.raises(InvalidInput, match="'RunPowerShellScript' is not one the lab runs"):
        run_command_request({"commandId": "RunPowerShellScript", "script": ["dir"]})
    with pytest.raises(InvalidInput, match=r"parameters\[0\].name"):
        run_command_request({"commandId": "RunShellScript", "parameters": [{"name": "a b"}]})
