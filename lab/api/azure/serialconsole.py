"""Microsoft.SerialConsole: operations, the subscription's console switch, serial ports under
a VM (or a scale-set instance), and `connect`, which answers a short-lived, single-use
`wss://` connection string served by the gateway (`lab.api.azure.gateway`).

Tested api-versions: 2018-05-01 (what the Azure CLI sends) and 2024-07-01 (the current SDK);
any other version is accepted and answered the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from lab.api.azure.common import ApiVersion, Caller, lab_of, require_action
from lab.api.azure.compute import find_vm
from lab.api.azure.errors import SubscriptionNotFound
from lab.api.security.tokens import Principal
from lab.domain.errors import InvalidInput, NotFound
from lab.domain.resource_ids import instance_id, same, vm_id
from lab.domain.serial_console import PortState, SerialPort
from lab.domain.vm import VmView

router = APIRouter()
NS = "Microsoft.SerialConsole"
PORT_TYPE = f"{NS}/serialPorts"
CONNECT_ACTION = f"{NS}/serialPorts/connect/action"
#: Where connection strings point (the gateway's websocket route shares it).
GATEWAY_PREFIX = "/n/connector/serialconsole/sessions"

_OPERATIONS = [
    (f"{NS}/consoleServices/read", "Serial Console", "Retrieves the current subscription state"),
    (f"{NS}/consoleServices/disableConsole/action", "Serial Console",
     "Disable Serial Console for a subscription"),
    (f"{NS}/consoleServices/enableConsole/action", "Serial Console",
     "Enable Serial Console for a subscription"),
    (f"{NS}/serialPorts/read", "Serial Port", "Retrieves the serial ports of a resource"),
    (f"{NS}/serialPorts/write", "Serial Port", "Creates or updates a serial port"),
    (f"{NS}/serialPorts/delete", "Serial Port", "Deletes a serial port"),
    (CONNECT_ACTION, "Serial Port", "Connects to a serial port"),
]  # fmt: skip


def _operations() -> dict[str, Any]:
    return {"value": [
        {"name": name, "isDataAction": "false",  # a string in the cloud's answer, too
         "display": {"provider": "Microsoft.SerialConsole", "resource": resource,
                     "operation": description, "description": description}}
        for name, resource, description in _OPERATIONS
    ]}  # fmt: skip


@router.get(f"/providers/{NS}/operations")
def operations(_v: ApiVersion, _c: Caller) -> dict[str, Any]:
    return _operations()


@router.get(f"/subscriptions/{{subscription}}/providers/{NS}/operations")
def operations_in_subscription(subscription: str, _v: ApiVersion, _c: Caller) -> dict[str, Any]:
    return _operations()


# -- consoleServices/default -------------------------------------------------------------------


def _known_subscription(request: Request, subscription: str) -> JSONResponse | None:
    """None if the lab holds the subscription; else the cloud's 404 with its *flat* body."""
    lab = lab_of(request)
    known = {v.identity.subscription_id.lower() for v in lab.vms.list()}
    known |= {a.subscription_id.lower() for a in lab.storage_accounts.list()}
    if subscription.lower() in known:
        return None
    err = SubscriptionNotFound(f"The subscription '{subscription}' could not be found.")
    return JSONResponse({"code": err.code, "message": err.message}, status_code=err.status)


def _console_services(subscription: str, default: str) -> str:
    if default != "default":
        raise NotFound(f"consoleServices/{default} does not exist; the only one is "
                       "consoleServices/default.", target=default)  # fmt: skip
    return f"/subscriptions/{subscription}/providers/{NS}/consoleServices/default"


_SERVICES = f"/subscriptions/{{subscription}}/providers/{NS}/consoleServices/{{default}}"


@router.get(_SERVICES)
def console_status(
    request: Request, subscription: str, default: str, _v: ApiVersion, principal: Caller
) -> Any:
    rid = _console_services(subscription, default)
    require_action(principal, f"{NS}/consoleServices/read", rid)
    missing = _known_subscription(request, subscription)
    if missing is not None:
        return missing
    return {"properties": {"disabled": lab_of(request).serial_console.disabled(subscription)}}


def _switch(request: Request, principal: Principal, subscription: str, default: str,
            disabled: bool) -> Any:  # fmt: skip
    rid = _console_services(subscription, default)
    verb = "disableConsole" if disabled else "enableConsole"
    require_action(principal, f"{NS}/consoleServices/{verb}/action", rid)
    missing = _known_subscription(request, subscription)
    if missing is not None:
        return missing
    lab_of(request).serial_console.set_disabled(subscription, disabled)
    return {"properties": {"disabled": disabled}}


@router.post(_SERVICES + "/disableConsole")
def disable_console(
    request: Request, subscription: str, default: str, _v: ApiVersion, principal: Caller
) -> Any:
    return _switch(request, principal, subscription, default, True)


@router.post(_SERVICES + "/enableConsole")
def enable_console(
    request: Request, subscription: str, default: str, _v: ApiVersion, principal: Caller
) -> Any:
    return _switch(request, principal, subscription, default, False)


# -- serial ports ---------------------------------------------------------------------------------


def port_resource(request: Request, port: SerialPort) -> dict[str, Any]:
    return {
        "id": f"{port.parent_id}/providers/{PORT_TYPE}/{port.name}",
        "name": port.name,
        "type": PORT_TYPE,
        "properties": {"state": port.state.value,
                       "connectionState": _connection_state(request, port)},
    }  # fmt: skip


def _connection_state(request: Request, port: SerialPort) -> str:
    lab = lab_of(request)
    for view in lab.vms.machines():
        if same(view.identity.resource_id, port.parent_id):
            broker = lab.consoles.existing(view.identity.domain_name)
            return "active" if broker is not None and broker.interactive else "inactive"
    return "inactive"


class PortProperties(BaseModel):
    model_config = ConfigDict(extra="allow")
    state: PortState = PortState.ENABLED


class PortBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    properties: PortProperties = PortProperties()


def _check_namespace(namespace: str) -> None:
    if namespace.lower() != "microsoft.compute":
        raise InvalidInput(
            f"Serial ports live under Microsoft.Compute resources, not '{namespace}'.",
            target="resourceProviderNamespace",
        )


class _Parent:
    """A serial port's parent, from the route: a VM, or a scale-set instance."""

    def __init__(self, request: Request, subscription: str, group: str, namespace: str,
                 name: str, instance: str | None = None) -> None:  # fmt: skip
        _check_namespace(namespace)
        self.request = request
        self.subscription, self.group, self.name, self.instance = (
            subscription,
            group,
            name,
            instance,
        )

    @property
    def resource_id(self) -> str:
        if self.instance is None:
            return vm_id(self.subscription, self.group, self.name)
        return instance_id(self.subscription, self.group, self.name, self.instance)

    def view(self) -> VmView:
        if self.instance is not None:
            lab = lab_of(self.request)
            model = lab.lookup.scale_set_at(self.subscription, self.group, self.name)
            return lab.scale_sets.instance(model, self.instance)
        return find_vm(self.request, self.subscription, self.group, self.name)

    def authorize(self, principal: Principal, action: str) -> VmView:
        require_action(principal, action, self.resource_id)
        return self.view()


def vm_parent(request: Request, subscription: str, group: str, namespace: str,
              name: str) -> _Parent:  # fmt: skip
    return _Parent(request, subscription, group, namespace, name)


def instance_parent(request: Request, subscription: str, group: str, namespace: str, name: str,
                    instance: str) -> _Parent:  # fmt: skip
    return _Parent(request, subscription, group, namespace, name, instance)


ParentDep = Callable[..., _Parent]


def _ports_paths() -> list[tuple[str, ParentDep]]:
    """The serial-port collection paths, for both parent kinds and resourceGroups casings.
    A scale-set parent arrives as `vmss/virtualMachines/0` or `vmss%2FvirtualMachines%2F0`;
    the server decodes `%2F` before routing, so one route serves both."""
    paths: list[tuple[str, ParentDep]] = []
    for groups in ("resourcegroups", "resourceGroups"):
        base = f"/subscriptions/{{subscription}}/{groups}/{{group}}/providers/{{namespace}}"
        tail = f"/providers/{NS}/serialPorts"
        paths.append((f"{base}/virtualMachines/{{name}}{tail}", vm_parent))
        paths.append((f"{base}/virtualMachineScaleSets/{{name}}/virtualMachines/{{instance}}"
                      f"{tail}", instance_parent))  # fmt: skip
    return paths


def _register(path: str, parent_dep: ParentDep) -> None:
    # A default, not an Annotated alias: annotations are strings here (PEP 563), and FastAPI
    # resolves them in the module's globals, where a local alias does not exist.
    parent = Depends(parent_dep)

    @router.get(path)
    def list_ports(
        request: Request, _v: ApiVersion, principal: Caller, p: _Parent = parent
    ) -> dict[str, Any]:
        p.authorize(principal, f"{PORT_TYPE}/read")
        ports = lab_of(request).serial_console.ports(p.resource_id)
        return {"value": [port_resource(request, port) for port in ports]}

    @router.get(path + "/{port}")
    def get_port(
        *, request: Request, p: _Parent = parent, port: str, _v: ApiVersion, principal: Caller
    ) -> dict[str, Any]:
        p.authorize(principal, f"{PORT_TYPE}/read")
        return port_resource(request, lab_of(request).serial_console.port(p.resource_id, port))

    @router.put(path + "/{port}")
    def put_port(
        *, request: Request, p: _Parent = parent, port: str, body: PortBody, _v: ApiVersion,
        principal: Caller, response: Response,
    ) -> dict[str, Any]:  # fmt: skip
        p.authorize(principal, f"{PORT_TYPE}/write")
        result = lab_of(request).serial_console.put_port(p.resource_id, port, body.properties.state)
        # 201 whether created or updated: the SDK accepts no other answer to this PUT.
        response.status_code = 201
        return port_resource(request, result)

    @router.delete(path + "/{port}")
    def delete_port(
        *, request: Request, p: _Parent = parent, port: str, _v: ApiVersion, principal: Caller
    ) -> Response:
        p.authorize(principal, f"{PORT_TYPE}/delete")
        existed = lab_of(request).serial_console.delete_port(p.resource_id, port)
        return Response(status_code=200 if existed else 204)

    @router.post(path + "/{port}/connect")
    def connect(
        *, request: Request, p: _Parent = parent, port: str, _v: ApiVersion, principal: Caller
    ) -> dict[str, Any]:
        view = p.authorize(principal, CONNECT_ACTION)
        session = lab_of(request).serial_console.connect(view, port, principal.object_id)
        base = str(request.base_url).rstrip("/").replace("https://", "wss://", 1)
        return {"connectionString": f"{base}{GATEWAY_PREFIX}/{session.id}/client"}


for _path, _parent in _ports_paths():
    _register(_path, _parent)


@router.get(f"/subscriptions/{{subscription}}/providers/{PORT_TYPE}")
def list_subscription_ports(
    request: Request, subscription: str, _v: ApiVersion, principal: Caller
) -> dict[str, Any]:
    lab = lab_of(request)
    ports = [
        port
        for v in lab.vms.machines()
        if same(v.identity.subscription_id, subscription)
        and principal.may(f"{PORT_TYPE}/read", v.identity.resource_id)
        for port in lab.serial_console.ports(v.identity.resource_id)
    ]
    return {"value": [port_resource(request, port) for port in ports]}
