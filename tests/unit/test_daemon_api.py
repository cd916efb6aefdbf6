"""The daemon API's scale-set routes and the CLI over them, on `FakeHypervisor`: `/v1/vmss`,
the per-VM routes with `?instanceId=`, the hint for a scale set's name without one, and
`lab vmss ...` / `--instance-id` driven through click against the daemon app."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from click.testing import CliRunner, Result

from lab.api.daemon.app import create_app
from lab.cli import common, output
from lab.cli.main import cli
from lab.cli.vmss import spread_instance_ids
from lab.client.http import LabClient
from lab.hypervisor.fake import FakeHypervisor
from lab.services.lab import Lab
from lab.settings import Settings
from tests.unit.fakelab import run

LAB = """\
subscriptionId: 8f6a2c1e-5b3d-4c7a-9e21-0d4b6f3a9c10
resourceGroups:
  - name: rg1
    virtualMachines:
      - name: vm1
        image: tiny
        size: {vcpus: 1, memoryMiB: 256}
        adminUsername: azureuser
        adminPassword: "Passw0rd!"
        bootDiagnostics: {enabled: true}
    scaleSets:
      - name: web
        sku: {capacity: 2}
        virtualMachineProfile:
          image: tiny
          size: {vcpus: 1, memoryMiB: 256}
          adminUsername: azureuser
          adminPassword: "Passw0rd!"
          kernelArgs: ""
          diagnosticsProfile: {bootDiagnostics: {enabled: true}}
"""

Client = httpx.AsyncClient


@pytest.fixture(autouse=True)
def recipes(settings: Settings) -> None:
    """The lab file's image names are checked against the image recipes."""
    (settings.images_dir / "tiny").mkdir(parents=True)


def api(lab: Lab, body: Callable[[Client], Awaitable[None]]) -> None:
    """Bring LAB up through the daemon API, then run `body` with a client of it."""

    async def go() -> None:
        transport = httpx.ASGITransport(app=create_app(lab))
        async with httpx.AsyncClient(transport=transport, base_url="http://lab") as c:
            up = await c.post("/v1/up", json={"source": "lab.yaml", "text": LAB})
            assert up.status_code == 200, up.text
            await body(c)

    run(lab, go)


def error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    message: str = r.json()["error"]["message"]
    return message


def test_vmss_list_and_get_show_instances(lab: Lab) -> None:
    async def body(c: Client) -> None:
        (web,) = (await c.get("/v1/vmss")).json()
        assert (web["name"], web["resourceGroup"], web["capacity"]) == ("web", "rg1", 2)
        assert (web["upgradeMode"], web["modelVersion"]) == ("Manual", 0)
        inst = web["instances"]
        assert [(i["instanceId"], i["name"], i["computerName"]) for i in inst] == [
            ("0", "web_0", "web000000"),
            ("1", "web_1", "web000001"),
        ]
        assert all(i["powerState"] == "running" and i["latestModelApplied"] for i in inst)
        assert all(i["vmId"] and i["domain"].endswith(f"+web+{i['instanceId']}") for i in inst)
        assert (await c.get("/v1/vmss/WEB", params={"resourceGroup": "rg1"})).json() == web
        assert (await c.get("/v1/vmss", params={"resourceGroup": "other"})).json() == []
        assert "lab vmss ls" in error(await c.get("/v1/vmss/nope"), 404)
        # /v1/vms lists VMs; with includeInstances, the instances too.
        assert [v["name"] for v in (await c.get("/v1/vms")).json()] == ["vm1"]
        machines = (await c.get("/v1/vms", params={"includeInstances": "true"})).json()
        assert [(v["name"], v["scaleSet"], v["instanceId"]) for v in machines] == [
            ("vm1", None, None),
            ("web_0", "web", "0"),
            ("web_1", "web", "1"),
        ]

    api(lab, body)


def test_per_vm_routes_take_an_instance_id(lab: Lab, hv: FakeHypervisor) -> None:
    async def body(c: Client) -> None:
        one = {"instanceId": "1"}
        vm = (await c.get("/v1/vms/web", params=one)).json()
        assert (vm["name"], vm["scaleSet"], vm["computerName"]) == ("web_1", "web", "web000001")
        log = await c.get("/v1/vms/web/boot-log", params=one)
        assert log.status_code == 200 and b"web_1 login: " in log.content
        # An instance's own name works too.
        assert (await c.get("/v1/vms/web_1")).json()["vmId"] == vm["vmId"]
        reset = await c.post("/v1/vms/web/reset", params={"instanceId": "0"})
        assert reset.json()["name"] == "web_0"
        assert [op for op, d in hv.calls if d.endswith("+web+0")].count("reset") == 1
        assert [op for op, d in hv.calls if d.endswith("+web+1")].count("reset") == 0
        sysrq = await c.post("/v1/vms/web/sysrq", params=one, json={"keys": "h"})
        assert sysrq.json() == {"keys": "h", "method": "sendkey"}
        assert (await c.post("/v1/vms/web/nmi", params=one)).json() == {"status": "sent"}
        shot = await c.get("/v1/vms/web/screenshot", params=one)
        assert shot.headers["content-type"] == "image/png"
        assert "virtualMachines/7" in error(await c.get("/v1/vms/web", params={"instanceId": "7"}),
                                            404)  # fmt: skip
        # Deleting an instance lowers the capacity, as in Azure.
        assert (await c.delete("/v1/vms/web", params=one)).status_code == 204
        web = (await c.get("/v1/vmss/web")).json()
        assert web["capacity"] == 1 and [i["instanceId"] for i in web["instances"]] == ["0"]

    api(lab, body)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/vms/web"),
        ("GET", "/v1/vms/web/boot-log"),
        ("GET", "/v1/vms/web/screenshot"),
        ("POST", "/v1/vms/web/reset"),
        ("POST", "/v1/vms/web/nmi"),
        ("DELETE", "/v1/vms/web"),
    ],
)
def test_a_scale_sets_name_without_instance_id_says_how_to_pick_one(
    lab: Lab, method: str, path: str
) -> None:
    async def body(c: Client) -> None:
        message = error(await c.request(method, path), 400)
        assert message == (
            "'web' is a scale set; add --instance-id N to pick an instance (instances: 0, 1)"
        )
        # A name that is neither still says a VM was not found.
        assert "lab ls" in error(await c.request(method, path.replace("web", "nope")), 404)

    api(lab, body)


def test_scale_update_instances_and_power_actions(lab: Lab, hv: FakeHypervisor) -> None:
    async def body(c: Client) -> None:
        def ids(web: dict[str, Any]) -> list[str]:
            return [i["instanceId"] for i in web["instances"]]

        web = (await c.post("/v1/vmss/web/scale", json={"capacity": 3})).json()
        assert web["capacity"] == 3 and ids(web) == ["0", "1", "2"]
        web = (await c.post("/v1/vmss/web/scale", json={"capacity": 1})).json()
        assert web["capacity"] == 1 and ids(web) == ["0"]
        assert "0 to 20" in error(await c.post("/v1/vmss/web/scale", json={"capacity": 21}), 400)
        assert "capacity" in error(await c.post("/v1/vmss/web/scale", json={}), 400)
        web = (await c.post("/v1/vmss/web/scale", json={"capacity": 2})).json()
        assert ids(web) == ["0", "3"]  # ids are never reused

        stopped = await c.post("/v1/vmss/web/powerOff", params={"skipShutdown": "true"},
                               json={"instanceIds": [3]})  # fmt: skip
        states = {i["instanceId"]: i["powerState"] for i in stopped.json()["instances"]}
        assert states == {"0": "running", "3": "stopped"}
        started = (await c.post("/v1/vmss/web/start")).json()  # no body: every instance
        assert {i["powerState"] for i in started["instances"]} == {"running"}
        refused = await c.post("/v1/vmss/web/restart", json={"instanceIds": ["9"]})
        assert "virtualMachines/9" in error(refused, 404)
        assert "empty" in error(await c.post("/v1/vmss/web/reset", json={"instanceIds": []}), 400)
        assert "one of: start, powerOff" in error(await c.post("/v1/vmss/web/explode"), 404)

        # A new model (Manual mode): instances are behind until update-instances.
        new_model = LAB.replace('kernelArgs: ""', "kernelArgs: quiet")
        await c.post("/v1/up", json={"source": "lab.yaml", "text": new_model})
        web = (await c.get("/v1/vmss/web")).json()
        assert web["modelVersion"] == 1
        assert [i["latestModelApplied"] for i in web["instances"]] == [False, False]
        web = (await c.post("/v1/vmss/web/update-instances", json={"instanceIds": ["3"]})).json()
        assert [i["latestModelApplied"] for i in web["instances"]] == [False, True]
        web = (await c.post("/v1/vmss/web/update-instances", json={"instanceIds": None})).json()
        assert all(i["latestModelApplied"] for i in web["instances"])

    api(lab, body)


# -- the CLI, through click, against the daemon app ------------------------------------------


class PortalTransport(httpx.BaseTransport):
    """A sync transport to an ASGI app served on one event loop in another thread, as the
    daemon's is: the CLI's sync client calls it from the test's thread."""

    def __init__(self, portal: BlockingPortal, lab: Lab) -> None:
        self.portal = portal
        self.asgi = httpx.ASGITransport(app=create_app(lab))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def forward() -> httpx.Response:
            response = await self.asgi.handle_async_request(request)
            content = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=content)

        return self.portal.call(forward)


@pytest.fixture
def lab_cli(
    lab: Lab, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Result]]:
    """Run `lab ...` in-process; its daemon client talks to the daemon app on an event loop
    of its own (one for the whole test, as a daemon has)."""
    with start_blocking_portal() as portal:
        client = LabClient(settings)
        client._http = httpx.Client(transport=PortalTransport(portal, lab), base_url="http://lab")
        monkeypatch.setattr(common, "LabClient", lambda _settings: client)
        monkeypatch.setenv("LAB_DATA_DIR", str(settings.data_dir))
        monkeypatch.setattr(output.out, "width", 200)
        lab_file = tmp_path / "lab.yaml"
        lab_file.write_text(LAB)

        def invoke(*args: str) -> Result:
            return CliRunner().invoke(cli, list(args), prog_name="lab")

        up = invoke("up", str(lab_file))
        assert up.exit_code == 0, up.output
        try:
            yield invoke
        finally:
            portal.call(_close_consoles, lab)


async def _close_consoles(lab: Lab) -> None:
    lab.consoles.close_all()


def test_cli_vmss_commands(lab_cli: Callable[..., Result]) -> None:
    listed = lab_cli("vmss", "ls", "--json")
    assert listed.exit_code == 0, listed.output
    ((web,),) = [json.loads(listed.stdout)]
    assert [i["instanceId"] for i in web["instances"]] == ["0", "1"]

    table = lab_cli("vmss", "show", "web", "-g", "rg1").stdout
    assert "SCALE SET" in table and "2 running" in table and "web000001" in table

    # Several ids after one flag, as the Azure CLI takes them, and the name after them.
    stopped = lab_cli("vmss", "stop", "--instance-ids", "0", "1", "web", "--skip-shutdown",
                      "--json")  # fmt: skip
    assert stopped.exit_code == 0, stopped.output
    assert {i["powerState"] for i in json.loads(stopped.stdout)["instances"]} == {"stopped"}
    started = lab_cli("vmss", "start", "web", "--instance-ids", "1", "--json")
    states = [i["powerState"] for i in json.loads(started.stdout)["instances"]]
    assert states == ["stopped", "running"]

    scaled = json.loads(lab_cli("vmss", "scale", "web", "--capacity", "3", "--json").stdout)
    assert [i["instanceId"] for i in scaled["instances"]] == ["0", "1", "2"]
    too_many = lab_cli("vmss", "scale", "web", "--capacity", "50")
    assert too_many.exit_code == 2 and "0 to 20" in too_many.stderr
    updated = lab_cli("vmss", "update-instances", "web", "--json")
    assert updated.exit_code == 0 and json.loads(updated.stdout)["capacity"] == 3

    missing = lab_cli("vmss", "show", "nope")
    assert missing.exit_code == 3 and "No scale set 'nope'" in missing.stderr
    bad_id = lab_cli("vmss", "reset", "web", "--instance-ids", "0", "x")
    assert bad_id.exit_code == 2  # `x` is not an id: click refuses the extra argument


def test_cli_instance_id_on_vm_commands(lab_cli: Callable[..., Result]) -> None:
    reset = lab_cli("vm", "reset", "web", "--instance-id", "0", "--json")
    assert reset.exit_code == 0, reset.output
    assert json.loads(reset.stdout)["name"] == "web_0"
    log = lab_cli("boot-log", "web", "--instance-id", "1")
    assert log.exit_code == 0 and "web_1 login: " in log.stdout
    sysrq = lab_cli("sysrq", "web", "h", "--instance-id", "1")
    assert sysrq.exit_code == 0 and "instance 1 of web" in sysrq.stderr

    for command in (("console", "web"), ("boot-log", "web"), ("vm", "reset", "web"),
                    ("nmi", "web", "--yes"), ("sysrq", "web", "h")):  # fmt: skip
        refused = lab_cli(*command)
        assert refused.exit_code == 2, (command, refused.output)
        assert "add --instance-id N to pick an instance (instances: 0, 1)" in refused.stderr

    gone = lab_cli("vm", "delete", "web", "--instance-id", "1")
    assert gone.exit_code == 0 and "deleted instance 1 of web" in gone.stderr
    assert json.loads(lab_cli("vmss", "show", "web", "--json").stdout)["capacity"] == 1


def test_cli_ls_shows_instances_in_a_second_table(lab_cli: Callable[..., Result]) -> None:
    table = lab_cli("ls").stdout
    vms, instances = table.split("scale-set instances")
    assert "vm1" in vms and "web_0" not in vms
    assert "web_0" in instances and "web000001" in instances and "INSTANCE ID" in instances
    rows = json.loads(lab_cli("ls", "--json").stdout)
    assert [r["name"] for r in rows] == ["vm1", "web_0", "web_1"]
    status = json.loads(lab_cli("status", "--json").stdout)
    assert [v["name"] for v in status["vms"]] == ["vm1", "web_0", "web_1"]


def test_instance_ids_spread_over_repeated_flags() -> None:
    assert spread_instance_ids(["web", "--instance-ids", "0", "1", "--json"]) == [
        "web", "--instance-ids", "0", "--instance-ids", "1", "--json",
    ]  # fmt: skip
    assert spread_instance_ids(["--instance-ids", "0,2", "3", "web"]) == [
        "--instance-ids", "0,2", "--instance-ids", "3", "web",
    ]  # fmt: skip
    assert spread_instance_ids(["--instance-ids=0", "1"]) == [
        "--instance-ids=0", "--instance-ids", "1",
    ]  # fmt: skip
    assert spread_instance_ids(["--", "--instance-ids", "0", "1"]) == [
        "--", "--instance-ids", "0", "1",
    ]  # fmt: skip


def test_the_cli_exits_as_the_daemons_error_says_and_reports_local_file_errors(
    tmp_path: Path,
) -> None:
    """A daemon `CorruptState` (a 500) makes `lab` exit 6, as its body's `exitCode` says, not
    1 as the status would; a file the CLI itself cannot write is a located error, not a
    traceback."""
    from lab.api.errors import render
    from lab.domain.errors import CorruptState, LabError
    from lab.settings import get_settings

    body = render(CorruptState("state/resources.json is damaged"), exit_code=True).body
    client = LabClient(Settings(data_dir=tmp_path))
    client._http = httpx.Client(base_url="http://lab", transport=httpx.MockTransport(
        lambda request: httpx.Response(500, content=body)))  # fmt: skip
    with pytest.raises(LabError) as raised:
        client.json("GET", "/v1/status")
    assert raised.value.exit_code == 6 and raised.value.code == "CorruptState"

    get_settings.cache_clear()
    out = CliRunner().invoke(cli, ["sp", "create-for-rbac", "--name", "x", "--create-cert",
                                   "--cert-file", str(tmp_path / "no" / "x.pem")],
                             env={"LAB_DATA_DIR": str(tmp_path / "data")})  # fmt: skip
    get_settings.cache_clear()
    assert out.exit_code == 1 and isinstance(out.exception, SystemExit), out.exception
    assert "No such file or directory" in out.output and "x.pem" in out.output, out.output
