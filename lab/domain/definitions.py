"""Definition -> model: what a lab file, an ARM body (validated by the lab file's rules) or a
scenario says, as the models the services keep. Pure functions: the services hash passwords
and choose ids; these only map fields."""

from __future__ import annotations

from lab.domain.boot_diagnostics import MANAGED_ACCOUNT
from lab.domain.labfile import BootDiagnosticsDef, ScaleSetDef, VirtualMachineDef, VmProfileDef
from lab.domain.scale_set import ScaleSetModel, UpgradeMode
from lab.domain.scenario import Scenario
from lab.domain.vm import BootDiagnosticsModel, VmModel

#: Where the lab's scenario VMs live, and what they are tagged with.
SCENARIO_LOCATION = "westeurope"


def boot_diagnostics_model(bd: BootDiagnosticsDef) -> BootDiagnosticsModel:
    account = bd.storage_account or (MANAGED_ACCOUNT if bd.enabled else None)
    return BootDiagnosticsModel(
        enabled=bd.enabled, storage_uri=bd.storage_uri, storage_account=account
    )


def vm_model(vm: VirtualMachineDef | VmProfileDef, location: str) -> VmModel:
    """The model of a VM (or of a scale set's instances) as a lab file, or an API PUT
    validated the same way, defines it."""
    return VmModel(
        image=vm.image,
        vcpus=vm.vcpus,
        memory_mib=vm.memory_mib,
        os_type=vm.os_type,
        admin_username=vm.admin_username,
        kernel_args=vm.kernel_args,
        boot_messages=vm.boot_messages,
        hyper_v_generation=vm.hyper_v_generation,
        boot_diagnostics=boot_diagnostics_model(vm.boot_diagnostics),
        tags=dict(vm.tags) if isinstance(vm, VirtualMachineDef) else {},
        location=location,
        size_name=vm.size_name,
        host=vm.host if isinstance(vm, VirtualMachineDef) else None,
    )


def scale_set_model(
    subscription: str, group: str, location: str, ss: ScaleSetDef, *, unique_id: str,
    password_hash: str,
) -> ScaleSetModel:  # fmt: skip
    """A scale set as a lab file (or an API PUT) defines it, with the hash of its admin
    password (the set keeps it for the instances to come) and its unique id (an existing set
    keeps its own: see `ScaleSetService.put`)."""
    prof = ss.virtual_machine_profile
    return ScaleSetModel(
        subscription_id=subscription, resource_group=group, name=ss.name,
        unique_id=unique_id, location=location, tags=dict(ss.tags),
        profile=vm_model(prof, location), admin_password_hash=password_hash,
        capacity=ss.sku.capacity, upgrade_mode=UpgradeMode(ss.upgrade_policy.mode),
        computer_name_prefix=ss.computer_name_prefix,
    )  # fmt: skip


def scenario_vm_model(scenario: Scenario, image: str, vcpus: int | None = None) -> VmModel:
    """A scenario's VM, on its broken disk (`image`); `vcpus` when not the scenario's."""
    return VmModel(
        image=image, vcpus=vcpus or scenario.vcpus, memory_mib=scenario.memory_mib,
        admin_username=scenario.admin.user, location=SCENARIO_LOCATION,
        hyper_v_generation=scenario.hyper_v_generation,
        tags={"scenario": scenario.name},
        boot_diagnostics=BootDiagnosticsModel(enabled=True, storage_account=MANAGED_ACCOUNT),
    )  # fmt: skip
