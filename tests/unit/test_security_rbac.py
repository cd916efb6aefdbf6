"""The RBAC matrix: every route of the Azure-compatible app (enumerated from the app itself, so
a new route cannot be forgotten) against Reader, Virtual Machine Contributor, Contributor, Owner,
a custom role with only `serialPorts/connect/action`, and one custom role per action the API
checks (that action alone), each assigned at the subscription and at another resource group.

The expected answer comes from `REQUIRED` below, written from Azure's operation names, not from
the routes' code, and from Azure's published built-in role definitions (`AZURE_BUILTIN_ROLES`,
literal data here, not the lab's own role table): a route that checks another action, or none,
or looks the resource up before checking, fails here. Lists are checked by what they hold: the
caller's readable items only.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.routing import APIWebSocketRoute

from lab.api.azure.app import create_azure_app
from lab.api.security.tokens import issue
from lab.domain.labfile import DEFAULT_SUBSCRIPTION_ID
from lab.domain.rbac import BUILTIN_ROLES, RoleDefinition, custom_role
from lab.domain.resource_ids import vm_id as vm_resource_id
from lab.domain.storage_account import StorageAccount
from lab.hypervisor.fake import FakeHypervisor
from lab.services.lab import Lab
from lab.settings import Settings
from tests.unit.fakelab import SHUTDOWN_TIMEOUT, SUBSCRIPTION, new_vm
from tests.unit.test_azure_vmss import body as set_body

KEY, STORAGE = b"k" * 32, b"s" * 32
V = "api-version=2024-07-01"
C, S, SC = "Microsoft.Compute", "Microsoft.Storage", "Microsoft.SerialConsole"
VMS, SETS = f"{C}/virtualMachines", f"{C}/virtualMachineScaleSets"
INST = f"{SETS}/virtualMachines"
CONNECT = f"{SC}/serialPorts/connect/action"
LAB_OWNER = "Microsoft.Authorization/roleAssignments/write"
POWER = ("start", "powerOff", "restart", "deallocate", "reimage", "redeploy")


@dataclass(frozen=True)
class Need:
    """What a route needs. `action`: the RBAC action checked (403 without it); `lists`: a list
    that shows the rg1 item only to callers holding one of these actions; `auth`: whether a
    bearer token is needed at all (blobs take a SAS, the page and its files are public)."""

    action: str | None = None
    lists: tuple[str, ...] = ()
    auth: bool = True


PUBLIC = Need(auth=False)
ANY_TOKEN = Need()  # the provider's operation list: any signed-in caller, as in Azure
VISIBLE = (f"{VMS}/read", f"{SETS}/read", f"{S}/storageAccounts/read")

#: (method, route path with `{param}`s, one `{action}` value or "") -> what it needs.
#: Paths use `resourceGroups` and `virtualMachines`; their other spellings must agree.
REQUIRED: dict[tuple[str, str, str], Need] = {
    ("GET", "/openapi.json", ""): PUBLIC,
    ("HEAD", "/openapi.json", ""): PUBLIC,
    ("GET", "/", ""): PUBLIC,
    ("GET", "/_portal/vendor/{name}", ""): PUBLIC,
    ("GET", "/_portal/{name}", ""): PUBLIC,
    ("GET", "/{account}/{container}/{blob}", ""): PUBLIC,
    ("HEAD", "/{account}/{container}/{blob}", ""): PUBLIC,
    # Microsoft.Resources
    ("GET", "/subscriptions", ""): Need(lists=(
        "Microsoft.Resources/subscriptions/read",
        "Microsoft.Resources/subscriptions/resourceGroups/read", *VISIBLE)),
    ("GET", "/subscriptions/{subscription}/resourceGroups", ""): Need(lists=(
        "Microsoft.Resources/subscriptions/resourceGroups/read", *VISIBLE)),
    # virtualMachines
    ("GET", "/subscriptions/{subscription}/providers/{VMS}", ""): Need(lists=(f"{VMS}/read",)),
    ("GET", "{RG}/providers/{VMS}", ""): Need(lists=(f"{VMS}/read",)),
    ("GET", "{RG}/providers/{VMS}/{name}", ""): Need(f"{VMS}/read"),
    ("PUT", "{RG}/providers/{VMS}/{name}", ""): Need(f"{VMS}/write"),
    ("PATCH", "{RG}/providers/{VMS}/{name}", ""): Need(f"{VMS}/write"),
    ("DELETE", "{RG}/providers/{VMS}/{name}", ""): Need(f"{VMS}/delete"),
    ("GET", "{RG}/providers/{VMS}/{name}/instanceView", ""): Need(f"{VMS}/instanceView/read"),
    ("POST", "{RG}/providers/{VMS}/{name}/retrieveBootDiagnosticsData", ""):
        Need(f"{VMS}/retrieveBootDiagnosticsData/action"),
    **{("POST", "{RG}/providers/{VMS}/{name}/{action}", a): Need(f"{VMS}/{a}/action")
       for a in POWER},
    # the VM agent: Run Command and the VM access extension
    ("POST", "{RG}/providers/{VMS}/{name}/runCommand", ""): Need(f"{VMS}/runCommand/action"),
    ("GET", "{RG}/providers/{VMS}/{name}/extensions", ""): Need(f"{VMS}/extensions/read"),
    ("GET", "{RG}/providers/{VMS}/{name}/extensions/{extension}", ""):
        Need(f"{VMS}/extensions/read"),
    ("PUT", "{RG}/providers/{VMS}/{name}/extensions/{extension}", ""):
        Need(f"{VMS}/extensions/write"),
    ("DELETE", "{RG}/providers/{VMS}/{name}/extensions/{extension}", ""):
        Need(f"{VMS}/extensions/delete"),
    # virtualMachineScaleSets
    ("GET", "/subscriptions/{subscription}/providers/{SETS}", ""): Need(lists=(f"{SETS}/read",)),
    ("GET", "{RG}/providers/{SETS}", ""): Need(lists=(f"{SETS}/read",)),
    ("GET", "{RG}/providers/{SETS}/{name}", ""): Need(f"{SETS}/read"),
    ("PUT", "{RG}/providers/{SETS}/{name}", ""): Need(f"{SETS}/write"),
    ("PATCH", "{RG}/providers/{SETS}/{name}", ""): Need(f"{SETS}/write"),
    ("DELETE", "{RG}/providers/{SETS}/{name}", ""): Need(f"{SETS}/delete"),
    ("GET", "{RG}/providers/{SETS}/{name}/instanceView", ""): Need(f"{SETS}/instanceView/read"),
    **{("POST", "{RG}/providers/{SETS}/{name}/{action}", a): Need(f"{SETS}/{a}/action")
       for a in (*POWER, "manualUpgrade", "delete")},
    ("GET", "{RG}/providers/{SETS}/{name}/virtualMachines", ""): Need(f"{INST}/read"),
    ("GET", "{RG}/providers/{SETS}/{name}/virtualMachines/{instance_id}", ""): Need(f"{INST}/read"),
    ("DELETE", "{RG}/providers/{SETS}/{name}/virtualMachines/{instance_id}", ""):
        Need(f"{INST}/delete"),
    ("GET", "{RG}/providers/{SETS}/{name}/virtualMachines/{instance_id}/instanceView", ""):
        Need(f"{INST}/instanceView/read"),
    ("POST", "{RG}/providers/{SETS}/{name}/virtualMachines/{instance_id}/"
             "retrieveBootDiagnosticsData", ""): Need(f"{INST}/retrieveBootDiagnosticsData/action"),
    **{("POST", "{RG}/providers/{SETS}/{name}/virtualMachines/{instance_id}/{action}", a):
       Need(f"{INST}/{a}/action") for a in POWER},
    # long-running operations
    ("GET", "/subscriptions/{subscription}/providers/{C}/locations/{location}/operations/"
            "{operation_id}", ""): Need(f"{C}/locations/operations/read"),
    ("GET", "/subscriptions/{subscription}/providers/{C}/locations/{location}/operationResults/"
            "{operation_id}", ""): Need(f"{C}/locations/operations/read"),
    # Microsoft.Storage
    ("GET", "/subscriptions/{subscription}/providers/{S}/storageAccounts", ""):
        Need(lists=(f"{S}/storageAccounts/read",)),
    ("GET", "{RG}/providers/{S}/storageAccounts", ""): Need(lists=(f"{S}/storageAccounts/read",)),
    ("GET", "{RG}/providers/{S}/storageAccounts/{name}", ""): Need(f"{S}/storageAccounts/read"),
    ("PUT", "{RG}/providers/{S}/storageAccounts/{name}", ""): Need(f"{S}/storageAccounts/write"),
    ("POST", "{RG}/providers/{S}/storageAccounts/{name}/listKeys", ""):
        Need(f"{S}/storageAccounts/listKeys/action"),
    ("POST", "{RG}/providers/{S}/storageAccounts/{name}/regenerateKey", ""):
        Need(f"{S}/storageAccounts/regenerateKey/action"),
    # Microsoft.SerialConsole
    ("GET", "/providers/{SC}/operations", ""): ANY_TOKEN,
    ("GET", "/subscriptions/{subscription}/providers/{SC}/operations", ""): ANY_TOKEN,
    ("GET", "/subscriptions/{subscription}/providers/{SC}/consoleServices/{default}", ""):
        Need(f"{SC}/consoleServices/read"),
    ("POST", "/subscriptions/{subscription}/providers/{SC}/consoleServices/{default}/"
             "disableConsole", ""): Need(f"{SC}/consoleServices/disableConsole/action"),
    ("POST", "/subscriptions/{subscription}/providers/{SC}/consoleServices/{default}/"
             "enableConsole", ""): Need(f"{SC}/consoleServices/enableConsole/action"),
    ("GET", "/subscriptions/{subscription}/providers/{SC}/serialPorts", ""):
        Need(lists=(f"{SC}/serialPorts/read",)),
    **{(method, f"{{RG}}/providers/{{namespace}}/{parent}/providers/{{SC}}/serialPorts{tail}", ""):
       Need(action)
       for parent in ("virtualMachines/{name}", "virtualMachineScaleSets/{name}/virtualMachines/"
                                                "{instance}")
       for method, tail, action in (
           ("GET", "", f"{SC}/serialPorts/read"), ("GET", "/{port}", f"{SC}/serialPorts/read"),
           ("PUT", "/{port}", f"{SC}/serialPorts/write"),
           ("DELETE", "/{port}", f"{SC}/serialPorts/delete"),
           ("POST", "/{port}/connect", CONNECT))},
    # the console gateway (its websocket: test_security_gateway.py)
    ("POST", "/n/connector/serialconsole/sessions/{session_id}/adminCommand/{command}", ""):
        Need(CONNECT),
    ("WS", "/n/connector/serialconsole/sessions/{session_id}/client", ""): Need(CONNECT),
    # the sign-in authority, cloud metadata and the device page: before any token
    ("GET", "/metadata/endpoints", ""): PUBLIC,
    ("GET", "/adfs/.well-known/openid-configuration", ""): PUBLIC,
    ("GET", "/adfs/discovery/keys", ""): PUBLIC,
    ("POST", "/adfs/oauth2/token", ""): PUBLIC,
    ("POST", "/adfs/oauth2/devicecode", ""): PUBLIC,
    ("GET", "/device", ""): PUBLIC,
    ("POST", "/device", ""): PUBLIC,
    # the lab's Graph: a Graph token, whatever the roles (these management tokens get 401)
    ("POST", "/graph/v1.0/directoryObjects/getByIds", ""): ANY_TOKEN,
    ("GET", "/graph/v1.0/me", ""): ANY_TOKEN,
    ("GET", "/tenants", ""): ANY_TOKEN,
    # Microsoft.Authorization (read-only)
    ("GET", "/{scope}/providers/Microsoft.Authorization/roleAssignments", ""):
        Need("Microsoft.Authorization/roleAssignments/read"),
    ("GET", "/{scope}/providers/Microsoft.Authorization/roleAssignments/{name}", ""):
        Need("Microsoft.Authorization/roleAssignments/read"),
    ("GET", "/{scope}/providers/Microsoft.Authorization/roleDefinitions", ""):
        Need("Microsoft.Authorization/roleDefinitions/read"),
    ("GET", "/{scope}/providers/Microsoft.Authorization/roleDefinitions/{role_id}", ""):
        Need("Microsoft.Authorization/roleDefinitions/read"),
    # the portal's scenario routes
    # (the list shows started scenarios only; its filtering is tested in test_portal.py)
    ("GET", "/_portal/api/scenarios", ""): ANY_TOKEN,
    ("GET", "/_portal/api/me", ""): ANY_TOKEN,
    ("GET", "/_portal/api/scenarios/{group}/{name}", ""): Need(f"{VMS}/read"),
    ("POST", "/_portal/api/scenarios/{group}/{name}/start", ""): Need(f"{VMS}/write"),
    ("POST", "/_portal/api/scenarios/{group}/{name}/hint", ""): Need(CONNECT),
    ("POST", "/_portal/api/scenarios/{group}/{name}/check", ""): Need(CONNECT),
    ("POST", "/_portal/api/scenarios/{group}/{name}/reset", ""): Need(f"{VMS}/reimage/action"),
    ("POST", "/_portal/api/scenarios/{group}/{name}/stop", ""): Need(f"{VMS}/delete"),
    # the instructor's routes: a class's instructors (tests/unit/test_classes.py), or the lab's
    # owner, who may write role assignments on the lab's subscription
    ("GET", "/_portal/api/classes", ""): ANY_TOKEN,
    ("GET", "/_portal/api/classes/{name}", ""): Need(LAB_OWNER),
    ("GET", "/_portal/api/classes/{name}/events", ""): Need(LAB_OWNER),
    ("DELETE", "/_portal/api/classes/{name}", ""): Need(LAB_OWNER),
    # a user's own password change: the current password proves who it is, no token
    ("POST", "/_portal/api/password", ""): PUBLIC,
    ("GET", "/_portal/api/classes/{name}/results.json", ""): Need(LAB_OWNER),
    ("GET", "/_portal/api/classes/{name}/results.csv", ""): Need(LAB_OWNER),
    ("WS", "/_portal/api/watch/{group}/{name}", ""): Need(CONNECT),
}  # fmt: skip

_ABBREV = {"{RG}": "/subscriptions/{subscription}/resourceGroups/{group}", "{VMS}": VMS,
           "{SETS}": SETS, "{C}": C, "{S}": S, "{SC}": SC}  # fmt: skip


def expand(path: str) -> str:
    for short, long in _ABBREV.items():
        path = path.replace(short, long)
    return path


def canonical(path: str) -> str:
    """One spelling per route: ARM's case-insensitive segments, `{name:path}` as `{name}`."""
    path = re.sub(r"\{(\w+):\w+\}", r"{\1}", path)
    path = re.sub(r"/resourcegroups(/|$)", r"/resourceGroups\1", path)
    return re.sub(r"/virtualmachines(/|$)", r"/virtualMachines\1", path)


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route the app serves, websockets as "WS"."""
    found: set[tuple[str, str]] = set()
    stack: list[Any] = list(app.routes)
    while stack:
        route = stack.pop()
        if hasattr(route, "effective_route_contexts"):  # an included router
            stack.extend(route.effective_route_contexts())
            continue
        original = getattr(route, "original_route", route)
        if isinstance(original, APIWebSocketRoute):
            found.add(("WS", original.path))
            continue
        path = getattr(route, "path_format", None) or getattr(route, "path", "")
        for method in getattr(route, "methods", None) or ():
            found.add((method, path))
    return found


def test_every_route_is_in_the_matrix(tmp_path: Path, image_cache: Path) -> None:
    app = create_azure_app(fresh_lab(tmp_path, image_cache), KEY, STORAGE)
    served = {(m, canonical(p)) for m, p in app_routes(app)}
    known = {(m, expand(p)) for m, p, _a in REQUIRED}
    assert served - known == set(), "routes without an entry in REQUIRED (add them)"
    assert known - served == set(), "entries in REQUIRED that the app does not serve"
    assert len(served) >= 60  # the enumeration found the routers' routes, not just the top


# -- the matrix ----------------------------------------------------------------------------------

#: Azure's built-in role definitions as Azure publishes them (`az role definition list --name
#: ...`; learn.microsoft.com, "Azure built-in roles"), written here as data and not taken from
#: lab.domain.rbac: the matrix's expectations come from these. None of the four has DataActions.
AZURE_BUILTIN_ROLES: dict[str, dict[str, Any]] = {
    "Owner": {
        "id": "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
        "Actions": ["*"],
        "NotActions": [],
        "DataActions": [], "NotDataActions": [],
    },
    "Contributor": {
        "id": "b24988ac-6180-42a0-ab88-20f7382dd24c",
        "Actions": ["*"],
        "NotActions": [
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
            "Microsoft.Blueprint/blueprintAssignments/write",
            "Microsoft.Blueprint/blueprintAssignments/delete",
            "Microsoft.Compute/galleries/share/action",
            "Microsoft.Purview/consents/write",
            "Microsoft.Purview/consents/delete",
            "Microsoft.Resources/deploymentStacks/manageDenySetting/action",
            "Microsoft.Subscription/cancel/action",
            "Microsoft.Subscription/enable/action",
        ],
        "DataActions": [], "NotDataActions": [],
    },
    "Reader": {
        "id": "acdd72a7-3385-48ef-bd42-f606fba81ae7",
        "Actions": ["*/read"],
        "NotActions": [],
        "DataActions": [], "NotDataActions": [],
    },
    "Virtual Machine Contributor": {
        "id": "9980e02c-c2be-4d73-94e8-173b1dc7cf3c",
        "Actions": [
            "Microsoft.Authorization/*/read",
            "Microsoft.Compute/availabilitySets/*",
            "Microsoft.Compute/locations/*",
            "Microsoft.Compute/virtualMachines/*",
            "Microsoft.Compute/virtualMachineScaleSets/*",
            "Microsoft.Compute/cloudServices/*",
            "Microsoft.Compute/disks/write",
            "Microsoft.Compute/disks/read",
            "Microsoft.Compute/disks/delete",
            "Microsoft.Compute/hostgroups/write",
            "Microsoft.Compute/hostgroups/hosts/write",
            "Microsoft.DevTestLab/schedules/*",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Network/applicationGateways/backendAddressPools/join/action",
            "Microsoft.Network/loadBalancers/backendAddressPools/join/action",
            "Microsoft.Network/loadBalancers/inboundNatPools/join/action",
            "Microsoft.Network/loadBalancers/inboundNatRules/join/action",
            "Microsoft.Network/loadBalancers/probes/join/action",
            "Microsoft.Network/loadBalancers/read",
            "Microsoft.Network/locations/*",
            "Microsoft.Network/networkInterfaces/*",
            "Microsoft.Network/networkSecurityGroups/join/action",
            "Microsoft.Network/networkSecurityGroups/read",
            "Microsoft.Network/publicIPAddresses/join/action",
            "Microsoft.Network/publicIPAddresses/read",
            "Microsoft.Network/virtualNetworks/read",
            "Microsoft.Network/virtualNetworks/subnets/join/action",
            "Microsoft.RecoveryServices/locations/*",
            "Microsoft.RecoveryServices/Vaults/backupFabrics/backupProtectionIntent/write",
            "Microsoft.RecoveryServices/Vaults/backupFabrics/protectionContainers/protectedItems/*/read",
            "Microsoft.RecoveryServices/Vaults/backupFabrics/protectionContainers/protectedItems/read",
            "Microsoft.RecoveryServices/Vaults/backupFabrics/protectionContainers/protectedItems/write",
            "Microsoft.RecoveryServices/Vaults/backupPolicies/read",
            "Microsoft.RecoveryServices/Vaults/backupPolicies/write",
            "Microsoft.RecoveryServices/Vaults/read",
            "Microsoft.RecoveryServices/Vaults/usages/read",
            "Microsoft.RecoveryServices/Vaults/write",
            "Microsoft.ResourceHealth/availabilityStatuses/read",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.SerialConsole/serialPorts/connect/action",
            "Microsoft.SqlVirtualMachine/*",
            "Microsoft.Storage/storageAccounts/listKeys/action",
            "Microsoft.Storage/storageAccounts/read",
            "Microsoft.Support/*",
        ],
        "NotActions": [],
        "DataActions": [], "NotDataActions": [],
    },
}  # fmt: skip


@dataclass(frozen=True)
class Role:
    """A role as the test sees it: a built-in one goes to the lab by name (the lab uses its own
    table), a custom one with its actions; what it allows is worked out here, by Azure's rule."""

    name: str
    actions: tuple[str, ...]
    not_actions: tuple[str, ...] = ()
    custom: bool = False


def _wildcard(pattern: str) -> re.Pattern[str]:
    """Azure's action matching: case-insensitive, `*` any run of characters (`/` included)."""
    return re.compile(".*".join(map(re.escape, pattern.split("*"))), re.IGNORECASE)


def azure_allows(role: Role, action: str) -> bool:
    def matches(patterns: tuple[str, ...]) -> bool:
        return any(_wildcard(p).fullmatch(action) for p in patterns)

    return matches(role.actions) and not matches(role.not_actions)


def test_the_lab_knows_azures_built_in_roles_by_name_and_id() -> None:
    assert {n: r.id for n, r in BUILTIN_ROLES.items()} == {
        n: d["id"] for n, d in AZURE_BUILTIN_ROLES.items()}


ROLES: dict[str, Role] = {
    **{name: Role(name, tuple(d["Actions"]), tuple(d["NotActions"]))
       for name, d in AZURE_BUILTIN_ROLES.items()},
    "Console Connect": Role("Console Connect", (CONNECT,), custom=True),
}  # fmt: skip
ONE_ACTION = sorted({n.action for n in REQUIRED.values() if n.action} |
                    {a for n in REQUIRED.values() for a in n.lists})  # fmt: skip
SUB_SCOPE = f"/subscriptions/{SUBSCRIPTION}"
OTHER_GROUP = f"{SUB_SCOPE}/resourceGroups/rg2"
RG1 = f"{SUB_SCOPE}/resourceGroups/rg1"


def fresh_lab(root: Path, image_cache: Path) -> Lab:
    settings = Settings(data_dir=root / "data", image_cache=image_cache,
                        images_dir=root / "recipes", libvirt_uri="test:///default", accel="qemu",
                        shutdown_timeout=SHUTDOWN_TIMEOUT, replay_bytes=4096,
                        scenarios_dir=root / "scenarios")  # fmt: skip
    return Lab(settings, FakeHypervisor())


def bearer(role: Role, scope: str) -> dict[str, str]:
    r: str | RoleDefinition = (custom_role(role.name, role.actions, role.not_actions)
                               if role.custom else role.name)  # fmt: skip
    return {"Authorization": "Bearer " + issue(KEY, user="alice", roles=[(r, scope)])}


OWNER = bearer(ROLES["Owner"], "/")


@dataclass
class Fixture:
    """What the routes' `{params}` name in a lab set up for one role."""

    operation_id: str
    session_id: str


async def set_up(lab: Lab, c: httpx.AsyncClient) -> Fixture:
    await lab.vms.create(new_vm("vm1", rg="rg1"))
    lab.storage_accounts.put(StorageAccount(subscription_id=SUBSCRIPTION, resource_group="rg1",
                                            name="diag1"))  # fmt: skip
    r = await c.put(f"{RG1}/providers/{SETS}/ss1?{V}", headers=OWNER, json=set_body(1))
    assert r.status_code == 201, r.text
    for _ in range(300):
        status = (await c.get(r.headers["azure-asyncoperation"], headers=OWNER)).json()
        if status["status"] != "InProgress":
            assert status["status"] == "Succeeded", status
            break
        await asyncio.sleep(0.02)
    operation_id = r.headers["azure-asyncoperation"].split("/operations/")[1].split("?")[0]
    ports = f"{RG1}/providers/{VMS}/vm1/providers/{SC}/serialPorts/0/connect?{V}"
    connected = await c.post(ports, headers=OWNER)
    assert connected.status_code == 200, connected.text
    session_id = connected.json()["connectionString"].split("/sessions/")[1].split("/")[0]
    return Fixture(operation_id, session_id)


VALUES = {"subscription": SUBSCRIPTION, "group": "rg1", "instance_id": "0", "instance": "0",
          "port": "0", "namespace": C, "location": "westeurope", "default": "default",
          "command": "nmi", "account": "diag1", "container": "c", "blob": "b",
          "extension": "VMAccessForLinux",
          "scope": f"subscriptions/{SUBSCRIPTION}/resourceGroups/rg1",
          "role_id": AZURE_BUILTIN_ROLES["Reader"]["id"]}  # fmt: skip


def url_for(path: str, action: str, fx: Fixture) -> str:
    path = expand(path)
    name = "ss1" if "/virtualMachineScaleSets/" in path else "vm1"
    if "/storageAccounts/" in path:
        name = "diag1"
    if path.startswith("/_portal/api/scenarios/"):
        name = "broken"
    if path.startswith("/_portal/api/classes/"):
        name = "c1"
    values = {**VALUES, "name": name, "action": action, "operation_id": fx.operation_id,
              "session_id": fx.session_id}  # fmt: skip
    return path.format_map(values) + (f"?{V}" if not path.startswith("/_") else "")


BODIES = {"PUT": {"location": "westeurope", "properties": {}}, "PATCH": {"tags": {"k": "v"}},
          "POST": {}}  # fmt: skip


def body_for(method: str, path: str) -> Any:
    path = expand(path)
    if method == "PUT" and "/virtualMachineScaleSets/{name}" in path and "serialPorts" not in path:
        return set_body(1)
    if "/adminCommand/" in path:
        return {"command": "nmi", "requestId": "r1"}
    if path.endswith("/regenerateKey"):
        return {"keyName": "key1"}
    return BODIES.get(method)


def holds(role: Role, scope: str, action: str, resource: str) -> bool:
    """Azure's rule: the role has the action, and the scope is the resource or above it."""
    rid, scope = resource.lower(), scope.lower()
    return (rid == scope or rid.startswith(scope + "/")) and azure_allows(role, action)


def test_the_matrix(tmp_path: Path, image_cache: Path) -> None:
    """The five roles, at the subscription and at another group, over every route (a fresh lab
    each); then each single-action role over the lists and the routes its action opens (one
    lab: an allowed answer does not depend on the state, and lists are read first)."""
    checked = {"allowed": 0, "denied": 0, "lists": 0}
    cases = list(itertools.product(ROLES.items(), (SUB_SCOPE, OTHER_GROUP)))
    for i, ((label, role), scope) in enumerate(cases):
        lab = fresh_lab(tmp_path / str(i), image_cache)
        asyncio.run(_in_lab(lab, _one_role(label, role, scope, anonymous=i == 0), checked))
    singles = {a: Role("Only One", (a,), custom=True) for a in ONE_ACTION}
    lab = fresh_lab(tmp_path / "singles", image_cache)
    asyncio.run(_in_lab(lab, _single_action_roles(singles), checked))
    print(f"\nRBAC matrix: {len(REQUIRED)} route entries x {len(cases)} role assignments "
          f"({len(ROLES)} roles x 2 scopes), then {len(singles)} single-action roles: "
          f"{checked} answers checked")
    assert checked["allowed"] > 0 and checked["denied"] > 0 and checked["lists"] > 0


Check = Callable[[httpx.AsyncClient, Fixture, dict[str, int]], Awaitable[None]]
ORDER = {"GET": 0, "HEAD": 0, "PUT": 1, "PATCH": 1, "POST": 2, "DELETE": 3}
#: Lists first, reads next, deletes last: what an allowed write changes cannot turn a later
#: answer into a 403 (authorization comes before any lookup), and lists see the lab as made.
ROUTES = sorted((k for k in REQUIRED if k[0] != "WS"), key=lambda k: (ORDER[k[0]], k[1], k[2]))


async def _in_lab(lab: Lab, check: Check, counts: dict[str, int]) -> None:
    try:
        transport = httpx.ASGITransport(app=create_azure_app(lab, KEY, STORAGE))
        async with httpx.AsyncClient(transport=transport, base_url="https://lab.test") as c:
            await check(c, await set_up(lab, c), counts)
    finally:
        lab.consoles.close_all()


def _one_role(label: str, role: Role, scope: str, *, anonymous: bool) -> Check:
    async def check(c: httpx.AsyncClient, fx: Fixture, counts: dict[str, int]) -> None:
        for key in ROUTES:
            await _check_route(c, fx, key, label, role, scope, counts, anonymous=anonymous)

    return check


def _single_action_roles(singles: dict[str, Role]) -> Check:
    async def check(c: httpx.AsyncClient, fx: Fixture, counts: dict[str, int]) -> None:
        lists = [k for k in ROUTES if REQUIRED[k].lists]
        for action, role in singles.items():
            for key in lists:
                await _check_route(c, fx, key, f"only {action}", role, SUB_SCOPE, counts)
        for key in ROUTES:
            action = REQUIRED[key].action
            if action is not None:
                await _check_route(c, fx, key, f"only {action}", singles[action], SUB_SCOPE,
                                   counts)  # fmt: skip

    return check


async def _check_route(
    c: httpx.AsyncClient, fx: Fixture, key: tuple[str, str, str], label: str,
    role: Role, scope: str, counts: dict[str, int], *, anonymous: bool = False,
) -> None:  # fmt: skip
    method, path, action = key
    need = REQUIRED[key]
    where = f"{label} at {scope}: {method} {path} {action}"
    url = url_for(path, action, fx)
    r = await c.request(method, url, headers=bearer(role, scope), json=body_for(method, path))
    if need.auth and anonymous:  # the same route without a token: 401
        bare = await c.request(method, url, json=body_for(method, path))
        assert bare.status_code == 401, f"{where}: {bare.status_code} {bare.text}"
    refused = r.status_code == 403 and _code(r) == "AuthorizationFailed"
    if need.lists:
        assert r.status_code == 200, f"{where}: {r.status_code} {r.text[:300]}"
        rg1_item = re.search(r"resourcegroups/rg1\b|\"rg1\"|/subscriptions/"
                             + SUBSCRIPTION + r"\"", r.text, re.I)  # fmt: skip
        item_expected = any(holds(role, scope, a, f"{RG1}/x") for a in need.lists)
        assert bool(rg1_item) == item_expected, f"{where}: {r.text[:300]}"
        counts["lists"] += 1
    elif need.action is None:
        assert not refused, f"{where}: {r.text[:300]}"
    else:
        resource = url.split("?")[0]
        if resource.startswith("/n/connector/"):
            resource = f"{RG1}/providers/{VMS}/vm1"  # the session's VM
        if resource.startswith("/_portal/api/scenarios/"):
            resource = vm_resource_id(DEFAULT_SUBSCRIPTION_ID, "rg1", "broken")
        if resource.startswith("/_portal/api/classes/"):
            resource = f"/subscriptions/{DEFAULT_SUBSCRIPTION_ID}"
        if holds(role, scope, need.action, resource):
            assert not refused, f"{where}: refused: {r.text[:300]}"
            counts["allowed"] += 1
        else:
            assert refused, f"{where}: not refused: {r.status_code} {r.text[:300]}"
            assert need.action in r.json()["error"]["message"], where
            counts["denied"] += 1


def _code(r: httpx.Response) -> str | None:
    try:
        return str(r.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None

