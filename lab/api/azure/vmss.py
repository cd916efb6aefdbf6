"""Microsoft.Compute/virtualMachineScaleSets and their instances (virtualMachines).

Set: list (subscription, resource group), GET, PUT (create, or a new model and capacity), PATCH,
DELETE; actions for the set or a list of instances (`{"instanceIds": [...]}`): start, powerOff,
restart, deallocate, reimage, redeploy, manualUpgrade, delete. Instances: list, GET
(`$expand=instanceView`), instanceView, start, powerOff, restart, deallocate, reimage, redeploy,
retrieveBootDiagnosticsData, DELETE. Everything that changes something is a long-running
operation, as the SDK pollers expect. Action names match in any case (the SDK sends
`poweroff` and `manualupgrade` for the set, `powerOff` for an instance).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from lab.api.azure.arm_bodies import (
    arm_fields,
    arm_size,
    check_storage_account,
    guest_fields,
    image_reference,
    obj,
    validated,
)
from lab.api.azure.common import ApiVersion, Caller, arm_paths, lab_of, or_none, require_action
from lab.api.azure.compute import (
    arm_operation,
    boot_diagnostics_data,
    custom_size,
    instance_view,
    start_power_action,
    vm_resource,
    wants_instance_view,
)
from lab.api.azure.operations import start_operation
from lab.api.security.tokens import Principal
from lab.domain.errors import InvalidInput, NotFound
from lab.domain.labfile import ScaleSetDef
from lab.domain.power import Target, arm_actions, by_arm_action, require_state
from lab.domain.resource_ids import SCALE_SETS, same, scale_set_id
from lab.domain.resource_ids import instance_id as instance_id_of
from lab.domain.scale_set import ScaleSetModel
from lab.domain.vm import VmView
from lab.services.lab import Lab
from lab.services.scale_sets import ScaleSetService

router = APIRouter()
SETS = SCALE_SETS
INSTANCES = f"{SETS}/virtualMachines"
_WHERE = "properties.virtualMachineProfile"
_ARM_FIELD = {
    "name": "name", "tags": "tags", "sku.capacity": "sku.capacity", "sku": "sku",
    "upgradePolicy.mode": "properties.upgradePolicy.mode",
    "virtualMachineProfile.size": "sku.name",
    **{f"virtualMachineProfile.{k}": v for k, v in arm_fields(_WHERE).items()},
}  # fmt: skip
#: Stands in for the password on an update without one (as for a VM: see vm_write).
_KEPT_PASSWORD = "Kept-Passw0rd"


# -- wire shapes ----------------------------------------------------------------------------------


def _sku(model: ScaleSetModel) -> dict[str, Any]:
    p = model.profile
    return {"name": p.size_name or custom_size(p.vcpus, p.memory_mib), "tier": "Standard",
            "capacity": model.capacity}  # fmt: skip


def set_resource(model: ScaleSetModel) -> dict[str, Any]:
    p = model.profile
    return {
        "id": model.resource_id, "name": model.name, "type": SETS,
        "location": model.location, "tags": model.tags, "sku": _sku(model),
        "properties": {
            "uniqueId": model.unique_id,
            "provisioningState": "Succeeded",
            "upgradePolicy": {"mode": model.upgrade_mode.value},
            "virtualMachineProfile": {
                "osProfile": {"computerNamePrefix": model.computer_name_prefix,
                              "adminUsername": p.admin_username,
                              "linuxConfiguration": {"disablePasswordAuthentication": False}},
                "storageProfile": {
                    "imageReference": image_reference(p.image, p.hyper_v_generation),
                    "osDisk": {"osType": p.os_type, "createOption": "FromImage"}},
                "diagnosticsProfile": {"bootDiagnostics": {
                    "enabled": p.boot_diagnostics.enabled,
                    "storageUri": p.boot_diagnostics.storage_uri}},
            },
        },
    }  # fmt: skip


def instance_resource(
    request: Request, model: ScaleSetModel, view: VmView, *, expand: bool = False
) -> dict[str, Any]:
    body = vm_resource(request, view, expand=expand)
    body["type"] = INSTANCES
    body["instanceId"] = view.identity.instance_id
    body["sku"] = {"name": _sku(model)["name"], "tier": "Standard"}
    props = body["properties"]
    props["latestModelApplied"] = lab_of(request).scale_sets.latest_model_applied(model, view)
    props.pop("hardwareProfile", None)  # an instance's size is the set's sku
    return body


# -- lookups --------------------------------------------------------------------------------------


def _find(request: Request, subscription: str, group: str, name: str) -> ScaleSetModel:
    return lab_of(request).lookup.scale_set_at(subscription, group, name)


def _authorized(
    request: Request, principal: Principal, subscription: str, group: str, name: str, action: str
) -> ScaleSetModel:
    require_action(principal, action, scale_set_id(subscription, group, name))
    return _find(request, subscription, group, name)


async def _instance(
    request: Request, principal: Principal, subscription: str, group: str, name: str,
    instance_id: str, action: str,
) -> tuple[ScaleSetModel, VmView]:  # fmt: skip
    require_action(
        principal, action, instance_id_of(subscription, group, name, instance_id)
    )
    model = _find(request, subscription, group, name)
    return model, await lab_of(request).scale_sets.instance_now(model, instance_id)


def _visible(request: Request, principal: Principal, subscription: str,
             group: str | None) -> list[ScaleSetModel]:  # fmt: skip
    models = lab_of(request).scale_sets.list(subscription, group)
    return [m for m in models if principal.may(f"{SETS}/read", m.resource_id)]


# -- bodies ---------------------------------------------------------------------------------------


class SetBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    location: str | None = None
    tags: dict[str, str] | None = None
    sku: dict[str, Any] | None = None
    properties: dict[str, Any] = {}


class InstanceIdsBody(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)
    instanceIds: list[str] | None = None


def _desired(
    lab: Lab, subscription: str, group: str, name: str, body: SetBody,
    current: ScaleSetModel | None,
) -> ScaleSetModel:  # fmt: skip
    """The set a PUT asks for; on an update, what the body leaves out stays as it is."""
    props = body.properties
    profile = obj(props, "virtualMachineProfile", "properties")
    fields = guest_fields(profile, _WHERE)
    fields["diagnosticsProfile"] = {"bootDiagnostics": fields.pop("bootDiagnostics")}
    prefix = obj(profile, "osProfile", _WHERE).get("computerNamePrefix")
    sku = body.sku or {}
    # An update without a password keeps the set's (the lab has only its hash): a stand-in
    # passes the checks, and the hash is taken over below.
    kept_hash = None
    if current is not None:
        if not fields["adminPassword"]:
            fields["adminPassword"], kept_hash = _KEPT_PASSWORD, current.admin_password_hash
        prefix = prefix or current.computer_name_prefix
    data: dict[str, Any] = {
        "name": name,
        "virtualMachineProfile": {**fields, "size": arm_size(sku.get("name")),
                                  "computerNamePrefix": prefix},
        "sku": {k: v for k, v in
                {"capacity": sku.get("capacity", current.capacity if current else None)}.items()
                if v is not None},
        "upgradePolicy": {"mode": obj(props, "upgradePolicy", "properties").get(
            "mode", current.upgrade_mode.value if current else "Manual")},
        "tags": body.tags if body.tags is not None else (current.tags if current else {}),
    }  # fmt: skip
    data["virtualMachineProfile"] = {
        k: v for k, v in data["virtualMachineProfile"].items() if v is not None
    }
    ss = validated(ScaleSetDef, data, lab, _ARM_FIELD)
    location = body.location or (current.location if current else None)
    # As for a VM (vm_write): the region goes into the operation URLs of the answer's headers.
    if not location or not re.fullmatch(r"[a-z0-9]{1,64}", location):
        raise InvalidInput("location is required: an Azure region such as westeurope",
                           target="location")  # fmt: skip
    desired = ScaleSetService.from_definition(subscription, group, location, ss, kept_hash)
    check_storage_account(lab, desired.profile)
    return desired


def _merged(current: ScaleSetModel, body: SetBody) -> SetBody:
    """A PATCH body on top of the current set, as a PUT body."""
    base = set_resource(current)
    props = base["properties"]
    patch = body.properties
    if "upgradePolicy" in patch:
        props["upgradePolicy"] = {
            **props["upgradePolicy"],
            **obj(patch, "upgradePolicy", "properties"),
        }
    vmp = obj(patch, "virtualMachineProfile", "properties")
    for key, value in vmp.items():
        if isinstance(value, dict):
            props["virtualMachineProfile"][key] = _deep_merge(
                props["virtualMachineProfile"].get(key, {}), value
            )
    sku = {**base["sku"], **(body.sku or {})}
    return SetBody(location=current.location,
                   tags=body.tags if body.tags is not None else current.tags,
                   sku=sku, properties=props)  # fmt: skip


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def _ids(body: InstanceIdsBody | None) -> list[str] | None:
    return None if body is None or body.instanceIds is None else [str(i) for i in body.instanceIds]


# -- set routes -----------------------------------------------------------------------------------


@router.get(f"/subscriptions/{{subscription}}/providers/{SETS}")
async def list_all_sets(
    request: Request, subscription: str, _v: ApiVersion, principal: Caller
) -> JSONResponse:
    models = _visible(request, principal, subscription, None)
    return JSONResponse({"value": [set_resource(m) for m in models]})


for _path in arm_paths(f"/providers/{SETS}"):

    @router.get(_path)
    async def list_sets(
        request: Request, subscription: str, group: str, _v: ApiVersion, principal: Caller
    ) -> JSONResponse:
        models = _visible(request, principal, subscription, group)
        return JSONResponse({"value": [set_resource(m) for m in models]})

    @router.get(_path + "/{name}")
    async def get_set(
        request: Request, subscription: str, group: str, name: str, _v: ApiVersion,
        principal: Caller,
    ) -> JSONResponse:  # fmt: skip
        model = _authorized(request, principal, subscription, group, name, f"{SETS}/read")
        return JSONResponse(set_resource(model))

    @router.put(_path + "/{name}")
    async def put_set(
        request: Request, subscription: str, group: str, name: str, body: SetBody,
        _v: ApiVersion, principal: Caller,
    ) -> Response:  # fmt: skip
        require_action(principal, f"{SETS}/write", scale_set_id(subscription, group, name))
        lab = lab_of(request)
        current = or_none(lambda: _find(request, subscription, group, name))
        desired = _desired(lab, subscription, group, name, body, current)
        answer = set_resource(current or desired)
        answer["properties"]["provisioningState"] = "Creating" if current is None else "Updating"
        return start_operation(request, desired.location, lab.scale_sets.put(desired),
                               status=201 if current is None else 200, body=answer)  # fmt: skip

    @router.patch(_path + "/{name}")
    async def patch_set(
        request: Request, subscription: str, group: str, name: str, body: SetBody,
        _v: ApiVersion, principal: Caller,
    ) -> Response:  # fmt: skip
        current = _authorized(request, principal, subscription, group, name, f"{SETS}/write")
        lab = lab_of(request)
        desired = _desired(lab, subscription, group, name, _merged(current, body), current)
        answer = set_resource(current)
        answer["properties"]["provisioningState"] = "Updating"
        return start_operation(request, desired.location, lab.scale_sets.put(desired),
                               status=200, body=answer)  # fmt: skip

    @router.delete(_path + "/{name}")
    async def delete_set(
        request: Request, subscription: str, group: str, name: str, _v: ApiVersion,
        principal: Caller,
    ) -> Response:  # fmt: skip
        require_action(principal, f"{SETS}/delete", scale_set_id(subscription, group, name))
        model = or_none(lambda: _find(request, subscription, group, name))
        if model is None:
            return Response(status_code=204)
        return start_operation(request, model.location, lab_of(request).scale_sets.delete(model))

    @router.get(_path + "/{name}/instanceView")
    async def set_instance_view(
        request: Request, subscription: str, group: str, name: str, _v: ApiVersion,
        principal: Caller,
    ) -> JSONResponse:  # fmt: skip
        model = _authorized(request, principal, subscription, group, name,
                            f"{SETS}/instanceView/read")  # fmt: skip
        views = await lab_of(request).scale_sets.instances_now(model)
        counts: dict[str, int] = {}
        for v in views:
            code = f"PowerState/{v.power_state.value}"
            counts[code] = counts.get(code, 0) + 1
        return JSONResponse({
            "virtualMachine": {"statusesSummary": [{"code": c, "count": n}
                                                   for c, n in sorted(counts.items())]},
            "statuses": [{"code": "ProvisioningState/succeeded", "level": "Info",
                          "displayStatus": "Provisioning succeeded"}],
        })  # fmt: skip

    @router.post(_path + "/{name}/{action}")
    async def set_action(
        request: Request, subscription: str, group: str, name: str, action: str,
        _v: ApiVersion, principal: Caller, body: InstanceIdsBody | None = None,
    ) -> Response:  # fmt: skip
        return await _set_action(request, principal, subscription, group, name, action, body)


#: The set's own actions besides the power operations: upgrading and deleting instances.
_SET_ONLY = ("manualUpgrade", "delete")


async def _set_action(
    request: Request, principal: Principal, subscription: str, group: str, name: str,
    action: str, body: InstanceIdsBody | None,
) -> Response:  # fmt: skip
    power = by_arm_action(action, Target.INSTANCE)
    canonical = power.arm_action if power else next(
        (a for a in _SET_ONLY if same(a, action)), None)  # fmt: skip
    if canonical is None:
        raise NotFound(f"No action '{action}' on virtualMachineScaleSets; the lab serves: "
                       f"{', '.join((*arm_actions(Target.INSTANCE), *_SET_ONLY))}.",
                       target=action)  # fmt: skip
    model = _authorized(request, principal, subscription, group, name,
                        f"{SETS}/{canonical}/action")  # fmt: skip
    lab = lab_of(request)
    ids = _ids(body)
    # Unknown ids: 404 now, not a failed operation.
    views = await lab.scale_sets.selected_now(model, ids)
    if canonical == "manualUpgrade":
        if ids is None:
            raise InvalidInput("manualUpgrade needs instanceIds: the instances to upgrade.",
                               target="instanceIds")  # fmt: skip
        work: Any = lab.scale_sets.upgrade(model, ids)
    elif canonical == "delete":
        work = lab.scale_sets.delete_instances(model, ids or [])
    else:
        assert power is not None
        for view in views:  # the state guard answers at once, as for a VM
            require_state(power.op, view.power_state, vm=view.identity.name)
        skip = request.query_params.get("skipShutdown", "false").lower() == "true"
        work = lab.scale_sets.perform(model, power.op, ids, skip_shutdown=skip)
    return start_operation(request, model.location, work)


# -- instance routes ------------------------------------------------------------------------------

_INSTANCE_PATHS = [
    p for spelling in ("virtualMachines", "virtualmachines")
    for p in arm_paths(f"/providers/{SETS}/{{name}}/{spelling}")
]  # fmt: skip

for _path in _INSTANCE_PATHS:

    @router.get(_path)
    async def list_instances(
        request: Request, subscription: str, group: str, name: str, _v: ApiVersion,
        principal: Caller,
    ) -> JSONResponse:  # fmt: skip
        model = _authorized(request, principal, subscription, group, name, f"{INSTANCES}/read")
        expand = wants_instance_view(request)
        views = await lab_of(request).scale_sets.instances_now(model)
        return JSONResponse({"value": [instance_resource(request, model, v, expand=expand)
                                       for v in views]})  # fmt: skip

    @router.get(_path + "/{instance_id}")
    async def get_instance(
        request: Request, subscription: str, group: str, name: str, instance_id: str,
        _v: ApiVersion, principal: Caller,
    ) -> JSONResponse:  # fmt: skip
        model, view = await _instance(request, principal, subscription, group, name, instance_id,
                                      f"{INSTANCES}/read")  # fmt: skip
        expand = wants_instance_view(request)
        return JSONResponse(instance_resource(request, model, view, expand=expand))

    @router.get(_path + "/{instance_id}/instanceView")
    async def get_instance_instance_view(
        request: Request, subscription: str, group: str, name: str, instance_id: str,
        _v: ApiVersion, principal: Caller,
    ) -> JSONResponse:  # fmt: skip
        _model, view = await _instance(request, principal, subscription, group, name, instance_id,
                                       f"{INSTANCES}/instanceView/read")  # fmt: skip
        return JSONResponse(instance_view(request, view))

    @router.post(_path + "/{instance_id}/retrieveBootDiagnosticsData")
    async def instance_boot_diagnostics_data(
        request: Request, subscription: str, group: str, name: str, instance_id: str,
        _v: ApiVersion, principal: Caller,
    ) -> dict[str, Any]:  # fmt: skip
        action = f"{INSTANCES}/retrieveBootDiagnosticsData/action"
        _model, view = await _instance(request, principal, subscription, group, name, instance_id,
                                       action)  # fmt: skip
        return boot_diagnostics_data(request, view)

    @router.post(_path + "/{instance_id}/{action}")
    async def instance_action(
        request: Request, subscription: str, group: str, name: str, instance_id: str,
        action: str, _v: ApiVersion, principal: Caller,
    ) -> Response:  # fmt: skip
        operation = arm_operation(action, Target.INSTANCE)
        _model, view = await _instance(request, principal, subscription, group, name, instance_id,
                                       operation.rbac_action(INSTANCES))  # fmt: skip
        return start_power_action(request, view, operation)

    @router.delete(_path + "/{instance_id}")
    async def delete_instance(
        request: Request, subscription: str, group: str, name: str, instance_id: str,
        _v: ApiVersion, principal: Caller,
    ) -> Response:  # fmt: skip
        require_action(
            principal,
            f"{INSTANCES}/delete",
            instance_id_of(subscription, group, name, instance_id),
        )
        model = _find(request, subscription, group, name)
        try:
            await lab_of(request).scale_sets.instance_now(model, instance_id)
        except NotFound:
            return Response(status_code=204)
        work = lab_of(request).scale_sets.delete_instances(model, [instance_id])
        return start_operation(request, model.location, work)
