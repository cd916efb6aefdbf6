"""Microsoft.Resources (minimal): the subscriptions and resource groups a caller can see.

ARM has no single "list everything" call; a client (the portal, `az account list`) starts from
`GET /subscriptions`, then lists resource groups, then each group's resources. The lab's
subscriptions and groups are not stored anywhere: they are the ones its resources (VMs, scale
sets, storage accounts) name. As in ARM, a caller sees a subscription or a group when one of
its role assignments covers it or something in it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from lab.api.azure.common import ApiVersion, Caller, lab_of
from lab.api.azure.errors import SubscriptionNotFound
from lab.api.security.tokens import Principal
from lab.domain.identity import TENANT_ID
from lab.domain.resource_ids import group_id, parse, same, subscription_id
from lab.services.lab import Lab

router = APIRouter()
_GROUP_READ = "Microsoft.Resources/subscriptions/resourceGroups/read"


Resource = tuple[str, str, str, str]


async def _resources(lab: Lab) -> list[Resource]:
    """(subscription, group, location, resource id) of every top-level resource of the lab."""
    found = [(v.identity.subscription_id, v.identity.resource_group, v.model.location,
              v.identity.resource_id) for v in await lab.vms.list_now()]  # fmt: skip
    found += [(m.subscription_id, m.resource_group, m.location, m.resource_id)
              for m in lab.scale_sets.list()]  # fmt: skip
    found += [(a.subscription_id, a.resource_group, a.location, a.resource_id)
              for a in lab.storage_accounts.list()]  # fmt: skip
    return found


def _visible_groups(
    resources: list[Resource], principal: Principal
) -> dict[tuple[str, str], tuple[str, str]]:
    """(subscription, group) lowercased -> (the group's spelling, its location), for the
    groups the caller may read or that hold a resource the caller may read."""
    groups: dict[tuple[str, str], tuple[str, str]] = {}
    for subscription, group, location, resource_id in resources:
        key = (subscription.lower(), group.lower())
        if key in groups:
            continue
        if principal.may(_GROUP_READ, group_id(subscription, group)) or principal.may(
            f"{_provider_type(resource_id)}/read", resource_id
        ):
            groups[key] = (group, location)
    return groups


def _provider_type(resource_id: str) -> str:
    """`Microsoft.Compute/virtualMachines` from a resource id."""
    parts = resource_id.split("/providers/", 1)[1].split("/")
    return f"{parts[0]}/{parts[1]}"


@router.get("/subscriptions")
async def list_subscriptions(request: Request, _v: ApiVersion, principal: Caller) -> JSONResponse:
    resources = await _resources(lab_of(request))
    spelled = {s.lower(): s for s, _g, _l, _r in resources}
    visible = {s for s, _g in _visible_groups(resources, principal)}
    visible |= {
        s for s in spelled if principal.may("Microsoft.Resources/subscriptions/read",
                                            f"/subscriptions/{spelled[s]}")
    }  # fmt: skip
    # A subscription that a role assignment of the lab's directory names exists, even before
    # it holds any resource (`az login` right after `lab sp create-for-rbac --scopes
    # /subscriptions/S`). A `lab token`'s own roles name no subscription into being.
    for record in lab_of(request).identity.assignments():
        named = parse(record.scope).subscription
        if named is not None:
            s = spelled.setdefault(named.lower(), named)
            if principal.may("Microsoft.Resources/subscriptions/read", subscription_id(s)):
                visible.add(named.lower())
    return JSONResponse({"value": [
        {"id": subscription_id(spelled[s]), "subscriptionId": spelled[s],
         "displayName": f"Serial Console Lab ({spelled[s][:8]})", "state": "Enabled",
         "tenantId": TENANT_ID, "homeTenantId": TENANT_ID}
        for s in sorted(visible)
    ]})  # fmt: skip


@router.get("/subscriptions/{subscription}/resourcegroups")
@router.get("/subscriptions/{subscription}/resourceGroups", include_in_schema=False)
async def list_resource_groups(
    request: Request, subscription: str, _v: ApiVersion, principal: Caller
) -> JSONResponse:
    resources = await _resources(lab_of(request))
    groups = _visible_groups(resources, principal)
    known = any(same(s, subscription) for s, _g, _l, _r in resources)
    if not known:
        raise SubscriptionNotFound(f"The subscription '{subscription}' could not be found.",
                                   target=subscription)  # fmt: skip
    value = [
        {"id": group_id(subscription, name), "name": name, "location": location,
         "type": "Microsoft.Resources/resourceGroups",
         "properties": {"provisioningState": "Succeeded"}}
        for (s, _key), (name, location) in sorted(groups.items())
        if s == subscription.lower()
    ]  # fmt: skip
    return JSONResponse({"value": value})



@router.get("/tenants")
async def list_tenants(_v: ApiVersion, _principal: Caller) -> JSONResponse:
    """The lab's one directory (`az login` as a user lists tenants before subscriptions)."""
    return JSONResponse({"value": [
        {"id": f"/tenants/{TENANT_ID}", "tenantId": TENANT_ID, "tenantCategory": "Home",
         "displayName": "Serial Console Lab", "defaultDomain": "serial-console-lab.local",
         "domains": ["serial-console-lab.local"], "tenantType": "AAD"}
    ]})  # fmt: skip
