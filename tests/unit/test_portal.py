"""The portal's server side over `FakeHypervisor`: its files (and only those) on the API's
origin, the ARM subscription and resource-group lists it starts from, `statusOnly` VM lists,
and the scenario panel's routes (RBAC, no answers given away, checks refused when there is
nothing to check)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from lab.api.azure.app import create_azure_app
from lab.hypervisor.fake import FakeHypervisor
from lab.services.lab import Lab
from lab.settings import REPO_ROOT, Settings
from tests.unit.fakelab import SUBSCRIPTION, new_vm, run
from tests.unit.test_azure_api import OWNER, STORAGE_KEY, TOKEN_KEY, V, token

SCENARIO = """\
title: A test scenario
level: beginner
story: The ticket's story.
objective: The objective.
checks:
  - name: the secret check
    command: cat /etc/secret-answer
    expect: "^42"
hints: [first hint, second hint]
timeLimitMinutes: 15
"""


@pytest.fixture
def portal_lab(tmp_path: Path, settings: Settings, hv: FakeHypervisor) -> Lab:
    web = tmp_path / "web"
    (web / "src").mkdir(parents=True)
    (web / "index.html").write_text("<!doctype html><title>portal</title>")
    (web / "src" / "app.js").write_text("export const x = 1;\n")
    (web / "secret.txt").write_text("not served")
    scenarios = tmp_path / "scenarios"
    (scenarios / "broken").mkdir(parents=True)
    (scenarios / "broken" / "scenario.yaml").write_text(SCENARIO)
    return Lab(settings.model_copy(update={"web_dir": web, "scenarios_dir": scenarios}), hv)


def serve(lab: Lab, body: object, *vms: object) -> None:
    app = create_azure_app(lab, TOKEN_KEY, STORAGE_KEY)

    async def go() -> None:
        for vm in vms:
            await lab.vms.create(vm)  # type: ignore[arg-type]
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://lab.test") as c:
            await body(c)  # type: ignore[operator]

    run(lab, go)


def test_page_and_files(portal_lab: Lab) -> None:
    async def body(c: httpx.AsyncClient) -> None:
        r = await c.get("/")
        assert r.status_code == 200 and r.text.startswith("<!doctype html>")
        assert "default-src 'self'" in r.headers["content-security-policy"]
        r = await c.get("/_portal/app.js")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/javascript")
        for path in ("/_portal/../secret.txt", "/_portal/%2e%2e/secret.txt",
                     "/_portal/nothing.js"):  # fmt: skip
            r = await c.get(path)
            assert r.status_code == 404, path
            assert "not served" not in r.text
        r = await c.get("/_portal/vendor/package.json")  # only the listed vendor files
        assert r.status_code == 404
        assert "xterm.js" in r.json()["error"]["message"]
        r = await c.get("/_portal/vendor/xterm.js")  # listed, but npm ci has not run here
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "PortalNotInstalled"
        assert "npm ci" in r.json()["error"]["message"]

    serve(portal_lab, body)


def test_the_repository_page_loads_only_its_own_origin() -> None:
    """web/index.html names no other origin: nothing is fetched from the internet."""
    page = (REPO_ROOT / "web" / "index.html").read_text()
    assert "http://" not in page and "https://" not in page and "//cdn" not in page


def test_subscriptions_and_groups_follow_rbac(portal_lab: Lab) -> None:
    vm1 = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1"  # noqa: E501

    async def body(c: httpx.AsyncClient) -> None:
        r = await c.get(f"/subscriptions{V}", headers=OWNER)
        assert [s["subscriptionId"] for s in r.json()["value"]] == [SUBSCRIPTION]
        r = await c.get(f"/subscriptions/{SUBSCRIPTION}/resourcegroups{V}", headers=OWNER)
        assert sorted(g["name"] for g in r.json()["value"]) == ["rg1", "rg2"]
        # A Reader of vm1 alone sees its subscription and its group, not rg2.
        reader = token(("Reader", vm1))
        r = await c.get(f"/subscriptions/{SUBSCRIPTION}/resourcegroups{V}", headers=reader)
        assert [g["name"] for g in r.json()["value"]] == ["rg1"]
        r = await c.get(f"/subscriptions{V}", headers=token(("Reader", "/subscriptions/other")))
        assert r.json()["value"] == []
        r = await c.get(f"/subscriptions/nope/resourcegroups{V}", headers=OWNER)
        assert r.status_code == 404 and r.json()["error"]["code"] == "SubscriptionNotFound"
        r = await c.get(f"/subscriptions{V}")
        assert r.status_code == 401

    serve(portal_lab, body, new_vm("vm1", "rg1"), new_vm("vm2", "rg2"))


def test_vm_list_with_status_only(portal_lab: Lab) -> None:
    async def body(c: httpx.AsyncClient) -> None:
        path = f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Compute/virtualMachines{V}"
        plain = (await c.get(path, headers=OWNER)).json()["value"][0]["properties"]
        assert "instanceView" not in plain
        status = (await c.get(path + "&statusOnly=true", headers=OWNER)).json()["value"][0]
        codes = [s["code"] for s in status["properties"]["instanceView"]["statuses"]]
        assert "PowerState/running" in codes

    serve(portal_lab, body, new_vm("vm1", "rg1"))


SCN = "/_portal/api/scenarios/scenarios/broken"
SCN_VM = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/scenarios/providers/"
    "Microsoft.Compute/virtualMachines/broken"
)


def test_scenario_panel_routes(portal_lab: Lab) -> None:
    async def body(c: httpx.AsyncClient) -> None:
        r = await c.get(SCN, headers=OWNER)
        assert r.status_code == 200
        panel = r.json()
        assert (panel["story"], panel["objective"]) == ("The ticket's story.", "The objective.")
        assert panel["hints"] == {"shown": [], "total": 2}
        assert panel["checks"] == ["the secret check"]
        assert "secret-answer" not in r.text and "^42" not in r.text  # no answers given away
        # Not started: nothing to check, and a hint needs an attempt.
        r = await c.post(f"{SCN}/check", headers=OWNER)
        assert r.status_code == 409
        assert "not started" in r.json()["error"]["message"]
        assert (await c.post(f"{SCN}/hint", headers=OWNER)).status_code == 409
        # A Reader of the scenario's VM reads the ticket, but may not check or take hints.
        reader = token(("Reader", SCN_VM))
        assert (await c.get(SCN, headers=reader)).status_code == 200
        for action in ("check", "hint"):
            r = await c.post(f"{SCN}/{action}", headers=reader)
            assert r.status_code == 403
            assert "serialPorts/connect/action" in r.json()["error"]["message"]
        # Someone else's VM only: not even the ticket.
        other = token(("Contributor", f"/subscriptions/{SUBSCRIPTION}"))
        assert (await c.get(SCN, headers=other)).status_code == 403
        # The catalogue lists every scenario, but says nothing of a VM the caller may not read.
        listed = (await c.get("/_portal/api/scenarios", headers=other)).json()
        assert listed["group"] == "scenarios"
        assert [s["name"] for s in listed["value"]] == ["broken"]
        assert "started" not in listed["value"][0]
        mine = (await c.get("/_portal/api/scenarios", headers=OWNER)).json()["value"][0]
        assert (mine["started"], mine["done"], mine["queue"]) == (False, False, None)
        r = await c.get("/_portal/api/scenarios/scenarios/nope", headers=OWNER)
        assert r.status_code == 404 and "broken" in r.json()["error"]["message"]

    serve(portal_lab, body)
