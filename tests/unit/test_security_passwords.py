"""A VM's admin password goes to the guest and nowhere else: not into any API response (the
Azure API's and the daemon's, errors included), not into a log record, not into the audit log,
the state files or libvirt's domain XML. VMs and a scale set are made with distinctive
passwords through the Azure API (PUT) and through a lab file (`POST /v1/up`, what `lab up`
sends); then everything the lab said and wrote is searched for them.

No file holds one either: the lab keeps only SHA-512 crypt hashes (scale-set models in the
state file, the tiny guest's per-VM initrd, the debian guest's config disk)."""

from __future__ import annotations

import asyncio
import logging
import stat
from typing import Any

import httpx
import pytest

from lab.api.azure.app import create_azure_app
from lab.api.daemon.app import create_app
from lab.hypervisor.fake import FakeHypervisor
from lab.services.lab import Lab
from lab.settings import Settings
from tests.unit.fakelab import SUBSCRIPTION, run
from tests.unit.test_azure_api import OWNER, RG, STORAGE_KEY, TOKEN_KEY, V, _vm_body
from tests.unit.test_azure_vmss import body as set_body

PUT_PASSWORD = "Zq7!leakPUT93xv"
SET_PASSWORD = "Kk2$leakVMSS51pz"
FILE_PASSWORD = "Yp4#leakFILE27qw"
FILE_SET_PASSWORD = "Wm8%leakFSET64rt"
SECRETS = (PUT_PASSWORD, SET_PASSWORD, FILE_PASSWORD, FILE_SET_PASSWORD)

LAB = f"""\
subscriptionId: {SUBSCRIPTION}
resourceGroups:
  - name: filerg
    virtualMachines:
      - name: fromfile
        image: tiny
        size: {{vcpus: 1, memoryMiB: 256}}
        adminUsername: azureuser
        adminPassword: "{FILE_PASSWORD}"
        bootDiagnostics: {{enabled: true}}
    scaleSets:
      - name: fileset
        sku: {{capacity: 1}}
        virtualMachineProfile:
          image: tiny
          size: {{vcpus: 1, memoryMiB: 256}}
          adminUsername: azureuser
          adminPassword: "{FILE_SET_PASSWORD}"
          diagnosticsProfile: {{bootDiagnostics: {{enabled: true}}}}
"""

#: A lab file whose error is next to the password: the error must not quote the line.
BAD_LAB = LAB.replace("image: tiny\n        size", "image: nosuchimage\n        size", 1)


@pytest.fixture(autouse=True)
def recipes(settings: Settings) -> None:
    (settings.images_dir / "tiny").mkdir(parents=True)  # lab files name known image recipes


def test_no_password_in_responses_logs_or_files(
    lab: Lab, hv: FakeHypervisor, caplog: pytest.LogCaptureFixture
) -> None:
    said: list[str] = []  # every response: status line, headers and body

    def keep(r: httpx.Response) -> httpx.Response:
        said.append(f"{r.status_code} {r.request.method} {r.request.url}\n{r.headers}\n{r.text}")
        return r

    vms = f"{RG}/providers/Microsoft.Compute/virtualMachines"
    ss = f"{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/pwset"

    async def settle(c: httpx.AsyncClient, r: httpx.Response) -> None:
        assert r.status_code in (200, 201, 202), r.text
        for _ in range(300):
            status = keep(await c.get(r.headers["azure-asyncoperation"], headers=OWNER)).json()
            if status["status"] != "InProgress":
                assert status["status"] == "Succeeded", status
                return
            await asyncio.sleep(0.02)

    async def go() -> None:
        azure = httpx.ASGITransport(app=create_azure_app(lab, TOKEN_KEY, STORAGE_KEY))
        daemon = httpx.ASGITransport(app=create_app(lab))
        async with (httpx.AsyncClient(transport=azure, base_url="https://lab.test") as c,
                    httpx.AsyncClient(transport=daemon, base_url="http://lab") as d):  # fmt: skip
            # Through the Azure API: a VM and a scale set.
            vm_body = _vm_body()
            vm_body["properties"]["osProfile"]["adminPassword"] = PUT_PASSWORD
            await settle(c, keep(await c.put(f"{vms}/pwvm{V}", headers=OWNER, json=vm_body)))
            sbody = set_body(1)
            sbody["properties"]["virtualMachineProfile"]["osProfile"]["adminPassword"] = (
                SET_PASSWORD
            )
            await settle(c, keep(await c.put(ss + V, headers=OWNER, json=sbody)))
            # The same bodies again (updates: the password is not taken again), and refused
            # ones whose errors sit next to the password.
            keep(await c.put(f"{vms}/pwvm{V}", headers=OWNER, json=vm_body))
            keep(await c.put(ss + V, headers=OWNER, json=sbody))
            bad: dict[str, Any] = _vm_body()
            bad["properties"]["osProfile"] = {"adminUsername": "root",
                                              "adminPassword": PUT_PASSWORD}  # fmt: skip
            keep(await c.put(f"{vms}/badvm{V}", headers=OWNER, json=bad))
            weak = _vm_body()
            weak["properties"]["osProfile"]["adminPassword"] = PUT_PASSWORD[:5]  # too short
            r = keep(await c.put(f"{vms}/weakvm{V}", headers=OWNER, json=weak))
            assert r.status_code == 400 and PUT_PASSWORD[:5] not in r.text, r.text
            typo = _vm_body()
            typo["properties"]["osProfile"]["adminPasswort"] = PUT_PASSWORD  # unknown field
            keep(await c.put(f"{vms}/typovm{V}", headers=OWNER, json=typo))
            # Through a lab file, as `lab up` sends it; and a bad one.
            up = keep(await d.post("/v1/up", json={"source": "lab.yaml", "text": LAB}))
            assert up.status_code == 200, up.text
            keep(await d.post("/v1/up", json={"source": "bad.yaml", "text": BAD_LAB}))
            # Everything a client reads back.
            sub = f"/subscriptions/{SUBSCRIPTION}"
            for path in (f"{vms}{V}", f"{vms}/pwvm{V}&$expand=instanceView",
                         f"{vms}/pwvm/instanceView{V}", f"{sub}/providers/Microsoft.Compute/"
                         f"virtualMachines{V}&statusOnly=true", f"{ss}{V}", f"{ss}/instanceView{V}",
                         f"{ss}/virtualMachines{V}&$expand=instanceView",
                         f"{sub}/providers/Microsoft.Compute/virtualMachineScaleSets{V}",
                         f"/subscriptions{V}", "/openapi.json"):  # fmt: skip
                r = keep(await c.get(path, headers=OWNER))
                assert r.status_code == 200, (path, r.text)
            r = keep(await d.post("/v1/vms/fromfile/nmi"))  # something for the audit log
            assert r.status_code == 200, r.text
            for path in ("/v1/status", "/v1/vms", "/v1/vms/fromfile", "/v1/vms/pwvm",
                         "/v1/vmss", "/v1/vmss/fileset", "/v1/vmss/pwset", "/v1/audit"):
                r = keep(await d.get(path))
                assert r.status_code == 200, (path, r.text)
            await settle(c, keep(await c.delete(f"{vms}/pwvm{V}", headers=OWNER)))

    with caplog.at_level(logging.DEBUG):
        run(lab, go)

    assert len(said) > 30
    for secret in SECRETS:
        for text in said:
            assert secret not in text, f"{secret} in a response:\n{text[:2000]}"
        for record in caplog.records:
            assert secret not in record.getMessage(), record
    # Files: the audit log, the state files, the VMs' initrds, everything under the data dir ...
    data = lab.settings.data_dir
    assert (data / "audit.log").is_file()
    files = sorted(p for p in data.rglob("*") if p.is_file())
    assert any(p.name == "initrd.img" for p in files) and any(p.parent.name == "state"
                                                              for p in files)  # fmt: skip
    for path in files:
        content = path.read_bytes()
        held = [secret for secret in SECRETS if secret.encode() in content]
        assert not held, f"{held} in {path.relative_to(data)}"
        # The hashes' homes are private: the state file, the guests' config.
        if path.name in ("initrd.img", "resources.json"):
            assert b"$6$" in content, path
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    # ... and what libvirt keeps of each domain (its XML and metadata).
    domains = list(hv._domains)  # every domain the fake libvirt holds, deleted ones gone
    assert len(domains) >= 3
    for name in domains:
        for secret in SECRETS:
            assert secret not in hv.xml(name), f"{secret} in the domain XML of {name}"
            assert secret not in (hv.metadata(name) or ""), f"{secret} in {name}'s metadata"


def test_state_files_hold_no_password(lab: Lab) -> None:
    """A scale set needs its password for the instances to come: it keeps only the hash."""
    async def go() -> None:
        daemon = httpx.ASGITransport(app=create_app(lab))
        async with httpx.AsyncClient(transport=daemon, base_url="http://lab") as d:
            up = await d.post("/v1/up", json={"source": "lab.yaml", "text": LAB})
            assert up.status_code == 200, up.text

    run(lab, go)
    for path in (lab.settings.data_dir / "state").iterdir():
        for secret in (FILE_PASSWORD, FILE_SET_PASSWORD):
            assert secret.encode() not in path.read_bytes(), f"{secret} in {path.name}"
