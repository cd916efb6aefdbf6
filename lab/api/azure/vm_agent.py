"""Microsoft.Compute/virtualMachines/{vm}/extensions and /runCommand: the VM agent's work
(`lab.services.vm_agent`) in Azure's wire shapes.

- PUT `extensions/{name}` of the VM access extension (`VMAccessForLinux`, what
  `az vm user update` sends) answers 201 (or 200 over an existing one) with the extension,
  `provisioningState: Creating`, and the long-running operation's headers; the operation resets
  the password through the guest agent. GET and DELETE as ARM serves them; protected settings
  never come back.
- POST `runCommand` (`RunShellScript`, what `az vm run-command invoke` sends) is a long-running
  operation whose result is a `RunCommandResult`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from lab.api.azure.common import ApiVersion, Caller, arm_paths, lab_of
from lab.api.azure.compute import (
    extension_instance_view,
    readable_vm,
    status_dict,
    wants_instance_view,
)
from lab.api.azure.operations import start_operation
from lab.domain.errors import InvalidInput
from lab.domain.resource_ids import VMS, vm_id
from lab.domain.vm import VmView
from lab.domain.vm_agent import (
    Extension,
    run_command_outcome,
    run_command_request,
    vmaccess_request,
)

router = APIRouter()
_EXT = f"{VMS}/extensions"


def extension_resource(request: Request, view: VmView, ext: Extension,
                       *, expand: bool = False) -> dict[str, Any]:  # fmt: skip
    ident = view.identity
    props: dict[str, Any] = {
        "publisher": ext.publisher, "type": ext.type,
        "typeHandlerVersion": ext.type_handler_version,
        "autoUpgradeMinorVersion": ext.auto_upgrade_minor_version,
        "settings": ext.settings, "provisioningState": ext.provisioning_state,
    }  # fmt: skip
    if expand:
        props["instanceView"] = extension_instance_view(ext)
    return {
        "id": f"{vm_id(ident.subscription_id, ident.resource_group, ident.name)}"
              f"/extensions/{ext.name}",
        "name": ext.name, "type": "Microsoft.Compute/virtualMachines/extensions",
        "location": view.model.location, "properties": props,
    }  # fmt: skip


async def _body(request: Request) -> dict[str, Any]:
    try:
        raw = await request.json()
    except ValueError as exc:
        raise InvalidInput(f"The body is not JSON: {exc}.") from exc
    if not isinstance(raw, dict):
        raise InvalidInput("The body must be a JSON object.")
    return raw


for _path in arm_paths(f"/providers/{VMS}/{{name}}/extensions"):

    @router.get(_path)
    async def list_extensions(
        request: Request, subscription: str, group: str, name: str, _v: ApiVersion,
        principal: Caller,
    ) -> dict[str, Any]:  # fmt: skip
        view = await readable_vm(request, principal, subscription, group, name, f"{_EXT}/read")
        expand = wants_instance_view(request)
        return {"value": [extension_resource(request, view, e, expand=expand)
                          for e in lab_of(request).vm_agent.extensions(view)]}  # fmt: skip

    @router.get(_path + "/{extension}")
    async def get_extension(
        request: Request, subscription: str, group: str, name: str, extension: str,
        _v: ApiVersion, principal: Caller,
    ) -> dict[str, Any]:  # fmt: skip
        view = await readable_vm(request, principal, subscription, group, name, f"{_EXT}/read")
        expand = wants_instance_view(request)
        ext = lab_of(request).vm_agent.extension(view, extension)
        return extension_resource(request, view, ext, expand=expand)

    @router.put(_path + "/{extension}")
    async def put_extension(  # async: the operation's task runs on the server's event loop
        request: Request, subscription: str, group: str, name: str, extension: str,
        _v: ApiVersion, principal: Caller,
    ) -> Response:  # fmt: skip
        view = await readable_vm(request, principal, subscription, group, name, f"{_EXT}/write")
        props = (await _body(request)).get("properties") or {}
        settings = props.get("settings") or {} if isinstance(props, dict) else None
        if not isinstance(props, dict) or not isinstance(settings, dict):
            raise InvalidInput("properties and properties.settings must be objects.",
                               target="properties")  # fmt: skip
        publisher, kind = str(props.get("publisher", "")), str(props.get("type", ""))
        reset = vmaccess_request(publisher, kind, props.get("protectedSettings"))
        agent = lab_of(request).vm_agent
        existed = agent.has(view, extension)
        ext = Extension(
            name=extension, publisher=publisher, type=kind,
            type_handler_version=str(props.get("typeHandlerVersion") or "1.5"),
            auto_upgrade_minor_version=bool(props.get("autoUpgradeMinorVersion", True)),
            settings=settings,
            provisioning_state="Updating" if existed else "Creating",
        )  # fmt: skip
        agent.save(view, ext)
        # Who reset which user's password: the password itself goes nowhere but the guest.
        audit = lab_of(request).consoles.audit
        audit.record("reset-password", vm=view.identity.name, user=principal.name,
                     username=reset.username)  # fmt: skip
        return start_operation(request, view.model.location, agent.apply_vmaccess(view, ext, reset),
                               status=200 if existed else 201,
                               body=extension_resource(request, view, ext))  # fmt: skip

    @router.delete(_path + "/{extension}")
    async def delete_extension(
        request: Request, subscription: str, group: str, name: str, extension: str,
        _v: ApiVersion, principal: Caller,
    ) -> Response:  # fmt: skip
        view = await readable_vm(request, principal, subscription, group, name,
                                 f"{_EXT}/delete")  # fmt: skip
        agent = lab_of(request).vm_agent
        if not agent.has(view, extension):
            return Response(status_code=204)
        agent.remove(view, extension)
        return Response(status_code=200)


for _path in arm_paths(f"/providers/{VMS}/{{name}}/runCommand"):

    @router.post(_path)
    async def run_command(  # async: the operation's task runs on the server's event loop
        request: Request, subscription: str, group: str, name: str, _v: ApiVersion,
        principal: Caller,
    ) -> Response:  # fmt: skip
        view = await readable_vm(request, principal, subscription, group, name,
                                 f"{VMS}/runCommand/action")  # fmt: skip
        script = run_command_request(await _body(request))
        agent = lab_of(request).vm_agent
        audit = lab_of(request).consoles.audit
        audit.record("run-command", vm=view.identity.name, user=principal.name,
                     lines=script.script.count("\n"))  # fmt: skip

        async def work() -> dict[str, Any]:
            done = await agent.run_shell(view, script)
            # A RunCommandResult: its one status holds the output.
            return {"value": [status_dict(run_command_outcome(done.exit_code, done.stdout,
                                                               done.stderr))]}  # fmt: skip

        return start_operation(request, view.model.location, work(), returns=True)

