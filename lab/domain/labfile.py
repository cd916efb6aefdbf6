"""The lab definition: what a user's YAML lab file describes, and the loader that reads it.

A lab file names an Azure subscription and location, and lists resource groups holding storage
accounts and virtual machines. Keys are camelCase, as in Azure's ARM JSON; the models expose
snake_case attributes (``vm.admin_username``) with camelCase aliases (``adminUsername``).
Unknown keys are errors, values are not coerced (``name: 1`` is an error, not ``"1"``), and
every Azure naming rule is checked (see `lab.domain.names`).

`parse_lab_definition` turns YAML text into a `LabDefinition`. Every problem is a
`LabFileError` naming the source, the 1-based line of the offending node and the field path
(``resourceGroups[0].virtualMachines[1].name``), and saying what is allowed. Lines come from
composing the YAML into nodes (which keep their marks) and building the data ourselves, so each
pydantic error location maps back to a node. Parsing text is the only I/O-like thing done here.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, PydanticCustomError
from yaml.nodes import ScalarNode

from lab.domain import identity, names, rbac
from lab.domain.boot_messages import DEFAULT as DEFAULT_BOOT_MESSAGES
from lab.domain.boot_messages import KERNEL_ARGS as BOOT_MESSAGE_ARGS
from lab.domain.boot_messages import BootMessages
from lab.domain.errors import InvalidInput, LabFileError
from lab.domain.names import OsType
from lab.domain.scale_set import MAX_CAPACITY
from lab.domain.sizes import (
    DEFAULT_SIZE_NAME,
    MAX_MEMORY_MIB,
    MAX_VCPUS,
    MIN_MEMORY_MIB,
    MIN_VCPUS,
    VmSize,
    lookup_size,
    resolve_size,
    unknown_size_message,
)
from lab.domain.vm import HyperVGeneration
from lab.domain.yamldoc import (
    NULL_TAG,
    Builder,
    FieldPath,
    compose,
    describe,
    format_path,
)

__all__ = [
    "DEFAULT_LOCATION",
    "DEFAULT_SUBSCRIPTION_ID",
    "BootDiagnosticsDef",
    "LabDefinition",
    "NetworkRuleSetDef",
    "OsType",
    "ResourceGroupDef",
    "StorageAccountDef",
    "VirtualMachineDef",
    "VmSize",
    "parse_lab_definition",
]

DEFAULT_SUBSCRIPTION_ID: Final = "00000000-0000-0000-0000-000000000000"
DEFAULT_LOCATION: Final = "westeurope"
KERNEL_ARGS_MAX: Final = 1024

_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_LOCATION = re.compile(r"[a-z0-9]{1,64}")
_IMAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_COMPUTER_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,8}")



# --- validation helpers -------------------------------------------------------------------------


def _fail(message: str, *path: str | int, related: FieldPath | None = None) -> PydanticCustomError:
    """A validation error with our own message; `path` is relative to where it is raised."""
    ctx: dict[str, Any] = {"message": message, "path": path}
    if related is not None:
        ctx["related"] = related
    return PydanticCustomError("lab_invalid", "{message}", ctx)


def _check(rule: Callable[..., object], *args: Any, **kwargs: Any) -> None:
    """Run a `names` rule, turning its `InvalidInput` into a validation error."""
    try:
        rule(*args, **kwargs)
    except InvalidInput as exc:
        raise _fail(exc.message) from exc


def _one_of(canonical: tuple[str, ...]) -> Callable[[Any], Any]:
    """A before-validator accepting an enum value in any case (Azure's are case-insensitive)."""

    def normalise(value: Any) -> Any:
        if isinstance(value, str):
            for choice in canonical:
                if choice.casefold() == value.casefold():
                    return choice
        return value

    return normalise


def _check_tags(tags: dict[str, str]) -> dict[str, str]:
    if len(tags) > names.TAGS_MAX:
        raise _fail(f"a resource can have at most {names.TAGS_MAX} tags, got {len(tags)}")
    for key, value in tags.items():
        try:
            names.validate_tag(key, value)
        except InvalidInput as exc:
            raise _fail(exc.message, key) from exc
    return tags


class _LabModel(BaseModel):
    """Common configuration: camelCase aliases, no unknown fields, no coercion, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        strict=True,
        frozen=True,
    )


Tags = dict[str, str]


def _tags_field() -> Any:
    return Field(default_factory=dict, description="Azure tags: name: value pairs of text")


# --- the models ---------------------------------------------------------------------------------


class NetworkRuleSetDef(_LabModel):
    """A storage account's firewall: whether requests from outside are allowed by default."""

    default_action: Literal["Allow", "Deny"] = Field(default="Allow", description="Allow or Deny")

    _normalise_action = field_validator("default_action", mode="before")(_one_of(("Allow", "Deny")))


class StorageAccountDef(_LabModel):
    """A storage account; boot diagnostics of VMs can be written to its blob endpoint."""

    name: str = Field(description="3-24 lower-case letters and digits, unique in the lab")
    allow_shared_key_access: bool = Field(default=True, description="true or false")
    network_rule_set: NetworkRuleSetDef = Field(
        default_factory=NetworkRuleSetDef, description="{defaultAction: Allow|Deny}"
    )
    tags: Tags = _tags_field()
    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        _check(names.validate_storage_account_name, value)
        return value

    _check_tags = field_validator("tags")(_check_tags)


class BootDiagnosticsDef(_LabModel):
    """Boot diagnostics: whether the serial log and screenshots are kept, and where."""

    enabled: bool = Field(default=False, description="true or false")
    storage_uri: str | None = Field(
        default=None,
        description="https://<account>.blob.core.windows.net/ of a storage account in the lab; "
        "omit for managed storage",
    )

    @field_validator("storage_uri")
    @classmethod
    def _check_storage_uri(cls, value: str | None) -> str | None:
        if value is not None:
            _check(names.storage_account_from_uri, value)
        return value

    @property
    def storage_account(self) -> str | None:
        """The account named by `storage_uri`, or None for managed storage."""
        if self.storage_uri is None:
            return None
        return names.storage_account_from_uri(self.storage_uri)


def _size_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "name"
    if isinstance(value, dict | VmSize):
        return "custom"
    return None


_SIZE_RULE = (
    "size must be an Azure size name such as Standard_B1s, or a custom size "
    f"{{vcpus: {MIN_VCPUS}-{MAX_VCPUS}, memoryMiB: {MIN_MEMORY_MIB}-{MAX_MEMORY_MIB}}}"
)

SizeSpec = Annotated[
    Annotated[str, Tag("name")] | Annotated[VmSize, Tag("custom")],
    Discriminator(
        _size_kind,
        custom_error_type="lab_invalid",
        custom_error_message="{message}",
        custom_error_context={"message": _SIZE_RULE},
    ),
]


class _GuestDef(_LabModel):
    """What a guest is made of: a VM, or the virtual machine profile of a scale set."""

    image: str = Field(
        description="the name of a lab image: tiny (direct kernel boot) or debian (Debian 12 "
        "booting GRUB from its own disk)"
    )
    size: SizeSpec = Field(
        default=DEFAULT_SIZE_NAME,
        description="an Azure size name such as Standard_B1s, or {vcpus: N, memoryMiB: M}",
    )
    os_type: OsType = Field(default="Linux", description="Linux or Windows")
    admin_username: str = Field(description="the user who logs in on the serial console")
    admin_password: str = Field(
        repr=False,
        description="the password the serial console login uses (on the debian image root's "
        "too, for maintenance mode)",
    )
    kernel_args: str = Field(
        default="",
        description="extra kernel command-line arguments, on one line (kernel-boot images such "
        "as tiny; the debian image's are in GRUB)",
    )
    boot_messages: BootMessages = Field(
        default=DEFAULT_BOOT_MESSAGES,
        description="how much of its boot the guest prints on the serial console: normal (the "
        "firmware, GRUB, every kernel and systemd line, as Azure's boot diagnostics shows) or "
        "quiet (the kernel's warnings and errors only: a faster boot)",
    )

    hyper_v_generation: HyperVGeneration = Field(
        default="V1",
        description="V1 (a BIOS: SeaBIOS) or V2 (UEFI: OVMF, as Azure's generation 2 VMs; its "
        "setup menu is Esc at power-on, on the serial console)",
    )

    _normalise_os_type = field_validator("os_type", mode="before")(_one_of(("Linux", "Windows")))
    _normalise_generation = field_validator("hyper_v_generation", mode="before")(
        _one_of(get_args(HyperVGeneration))
    )
    _normalise_boot_messages = field_validator("boot_messages", mode="before")(
        _one_of(tuple(BOOT_MESSAGE_ARGS))
    )

    @field_validator("image")
    @classmethod
    def _check_image(cls, value: str, info: ValidationInfo) -> str:
        if not _IMAGE_NAME.fullmatch(value):
            raise _fail(
                f"image name '{value}' is invalid: image names are 1-64 letters, digits, '.', "
                "'_' and '-', starting with a letter or digit"
            )
        known = info.context.get("known_images") if isinstance(info.context, dict) else None
        if known is not None and value not in known:
            have = (
                f"known images: {', '.join(sorted(known))}" if known else "no images are built yet"
            )
            raise _fail(
                f"image '{value}' is not a known image ({have}); "
                f"run `lab image build {value}` to build it"
            )
        return value

    @field_validator("size")
    @classmethod
    def _check_size(cls, value: str | VmSize) -> str | VmSize:
        if isinstance(value, str):
            row = lookup_size(value)
            if row is None:
                raise _fail(unknown_size_message(value))
            return row.name
        return value

    @field_validator("admin_username")
    @classmethod
    def _check_username(cls, value: str, info: ValidationInfo) -> str:
        _check(names.validate_admin_username, value, os_type=info.data.get("os_type", "Linux"))
        return value

    @field_validator("admin_password")
    @classmethod
    def _check_password(cls, value: str, info: ValidationInfo) -> str:
        _check(names.validate_admin_password, value, os_type=info.data.get("os_type", "Linux"))
        return value

    @field_validator("kernel_args")
    @classmethod
    def _check_kernel_args(cls, value: str) -> str:
        if len(value) > KERNEL_ARGS_MAX or any(unicodedata.category(c) == "Cc" for c in value):
            raise _fail(
                f"kernelArgs must be one line of at most {KERNEL_ARGS_MAX} characters, without "
                "newlines or other control characters"
            )
        return value

    @property
    def vm_size(self) -> VmSize:
        """The resolved vCPUs and memory."""
        return resolve_size(self.size)

    @property
    def size_name(self) -> str | None:
        """The Azure size name, or None for a custom ``{vcpus, memoryMiB}`` size."""
        return self.size if isinstance(self.size, str) else None

    @property
    def vcpus(self) -> int:
        return self.vm_size.vcpus

    @property
    def memory_mib(self) -> int:
        return self.vm_size.memory_mib


class VirtualMachineDef(_GuestDef):
    """A virtual machine: a real QEMU guest booted from a lab image."""

    name: str = Field(
        description="1-64 letters, digits, '-', '_', '.', not ending in '.' or '-'; "
        "unique in its resource group"
    )
    boot_diagnostics: BootDiagnosticsDef = Field(
        default_factory=BootDiagnosticsDef,
        description="{enabled: true|false, storageUri: https://<account>.blob.core.windows.net/}",
    )
    tags: Tags = _tags_field()
    host: str | None = Field(
        default=None,
        description="the name of the lab host the VM must run on (`lab host ls`); without it "
        "the lab places the VM on the host with the most free capacity",
    )

    _check_tags = field_validator("tags")(_check_tags)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        _check(names.validate_vm_name, value)
        return value

    @property
    def boot_diagnostics_account(self) -> str | None:
        """The storage account named by ``bootDiagnostics.storageUri``, or None."""
        return self.boot_diagnostics.storage_account


class DiagnosticsProfileDef(_LabModel):
    boot_diagnostics: BootDiagnosticsDef = Field(
        default_factory=BootDiagnosticsDef,
        description="{enabled: true|false, storageUri: https://<account>.blob.core.windows.net/}",
    )


class VmProfileDef(_GuestDef):
    """A scale set's virtual machine profile: what every instance is made of."""

    diagnostics_profile: DiagnosticsProfileDef = Field(
        default_factory=DiagnosticsProfileDef,
        description="{bootDiagnostics: {enabled: true|false, storageUri: ...}}",
    )
    computer_name_prefix: str | None = Field(
        default=None,
        description="1-9 letters, digits and '-' (default: the scale set's name, cut to 9)",
    )

    @field_validator("computer_name_prefix")
    @classmethod
    def _check_prefix(cls, value: str | None) -> str | None:
        if value is not None and not _COMPUTER_PREFIX.fullmatch(value):
            raise _fail(
                f"computerNamePrefix '{value}' is invalid: 1-9 letters, digits and '-', "
                "starting with a letter (the instance's host name is the prefix and six "
                "base-36 digits)"
            )
        return value

    @property
    def boot_diagnostics(self) -> BootDiagnosticsDef:
        return self.diagnostics_profile.boot_diagnostics


class SkuDef(_LabModel):
    capacity: int = Field(description=f"how many instances: 0-{MAX_CAPACITY}")

    @field_validator("capacity")
    @classmethod
    def _check_capacity(cls, value: int) -> int:
        if not 0 <= value <= MAX_CAPACITY:
            raise _fail(
                f"sku.capacity is {value}; a lab scale set has 0 to {MAX_CAPACITY} instances "
                "(each is a real QEMU guest)"
            )
        return value


class UpgradePolicyDef(_LabModel):
    mode: Literal["Manual", "Automatic"] = Field(default="Manual",
                                                 description="Manual or Automatic")  # fmt: skip

    _normalise_mode = field_validator("mode", mode="before")(_one_of(("Manual", "Automatic")))


class ScaleSetDef(_LabModel):
    """A virtual machine scale set: a model and N instances of it."""

    name: str = Field(
        description="1-64 letters, digits, '-', '_', '.', not ending in '.' or '-'; "
        "unique among the scale sets of its resource group"
    )
    virtual_machine_profile: VmProfileDef = Field(
        description="image, size, adminUsername, adminPassword, diagnosticsProfile, ..."
    )
    sku: SkuDef = Field(description="{capacity: N}")
    upgrade_policy: UpgradePolicyDef = Field(
        default_factory=UpgradePolicyDef, description="{mode: Manual|Automatic}"
    )
    tags: Tags = _tags_field()

    _check_tags = field_validator("tags")(_check_tags)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        _check(names.validate_vm_name, value)
        return value

    @property
    def computer_name_prefix(self) -> str:
        prefix = self.virtual_machine_profile.computer_name_prefix
        if prefix:
            return prefix
        cut = re.sub(r"[^A-Za-z0-9-]", "", self.name)[:9].rstrip("-")
        return cut if cut and cut[0].isalpha() else f"vm{cut}"[:9]


class ResourceGroupDef(_LabModel):
    """A resource group: a named set of storage accounts and VMs."""

    name: str = Field(
        description="1-90 letters, digits, '_', '-', '.', '(', ')', not ending in '.'; "
        "unique in the lab"
    )
    tags: Tags = _tags_field()
    storage_accounts: list[StorageAccountDef] = Field(
        default_factory=list, description="a list of storage accounts"
    )
    virtual_machines: list[VirtualMachineDef] = Field(
        default_factory=list, description="a list of virtual machines"
    )
    scale_sets: list[ScaleSetDef] = Field(
        default_factory=list, description="a list of virtual machine scale sets"
    )

    _check_tags = field_validator("tags")(_check_tags)

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        _check(names.validate_resource_group_name, value)
        return value

    @model_validator(mode="after")
    def _unique_vm_names(self) -> ResourceGroupDef:
        seen: dict[str, int] = {}
        for index, vm in enumerate(self.virtual_machines):
            first = seen.setdefault(vm.name.casefold(), index)
            if first != index:
                raise _fail(
                    f"VM name '{vm.name}' is already used by virtualMachines[{first}] in this "
                    "resource group; VM names must be unique within a resource group "
                    "(Azure compares names without regard to case)",
                    "virtualMachines",
                    index,
                    "name",
                    related=("virtualMachines", first, "name"),
                )
        return self

    @model_validator(mode="after")
    def _unique_scale_set_names(self) -> ResourceGroupDef:
        seen: dict[str, int] = {}
        for index, ss in enumerate(self.scale_sets):
            first = seen.setdefault(ss.name.casefold(), index)
            if first != index:
                raise _fail(
                    f"scale set name '{ss.name}' is already used by scaleSets[{first}] in this "
                    "resource group; scale set names must be unique within a resource group",
                    "scaleSets", index, "name", related=("scaleSets", first, "name"),
                )  # fmt: skip
        return self

    def virtual_machine(self, name: str) -> VirtualMachineDef | None:
        """The VM of that name (case-insensitive), or None."""
        return next((vm for vm in self.virtual_machines if names.same_name(vm.name, name)), None)


class RoleAssignmentDef(_LabModel):
    """A built-in role at a scope (`/`, the subscription, a group or a resource)."""

    role: str = Field(description="Reader, Virtual Machine Contributor, Contributor or Owner")
    scope: str = Field(default="/", description="/subscriptions/<id>[/resourceGroups/<name>]")

    @field_validator("role")
    @classmethod
    def _check_role(cls, value: str) -> str:
        _check(rbac.role, value)
        return rbac.role(value).name

    @field_validator("scope")
    @classmethod
    def _check_scope(cls, value: str) -> str:
        _check(rbac.normalise_scope, value)
        return rbac.normalise_scope(value)


class UserDef(_LabModel):
    """A lab user: signs in with a username and password (`az login -u`, the portal)."""

    username: str = Field(description="1-64 letters, digits, '.', '_', '@' or '-'")
    password: str = Field(description="at least 8 characters; quote it")
    role_assignments: list[RoleAssignmentDef] = Field(default_factory=list,
                                                      description="[{role, scope}]")  # fmt: skip

    @field_validator("username")
    @classmethod
    def _check_username(cls, value: str) -> str:
        _check(identity.check_username, value)
        return value

    @field_validator("password")
    @classmethod
    def _check_password(cls, value: str) -> str:
        _check(identity.check_password, value, target="password")
        return value


class ServicePrincipalDef(_LabModel):
    """An app that signs in with a client secret (`az login --service-principal`)."""

    name: str = Field(description="the display name")
    app_id: str = Field(description="its client id: a GUID your scripts name")
    secret: str = Field(description="its client secret, at least 8 characters; quote it")
    role_assignments: list[RoleAssignmentDef] = Field(default_factory=list,
                                                      description="[{role, scope}]")  # fmt: skip

    @field_validator("app_id")
    @classmethod
    def _check_app_id(cls, value: str) -> str:
        if not _GUID.fullmatch(value):
            raise _fail(f"appId '{value}' is not a GUID")
        return value.lower()

    @field_validator("secret")
    @classmethod
    def _check_secret(cls, value: str) -> str:
        _check(identity.check_password, value, target="secret")
        return value


class PrincipalsDef(_LabModel):
    """Who may sign in to the lab's authority, and their roles."""

    users: list[UserDef] = Field(default_factory=list, description="[{username, password, "
                                 "roleAssignments}]")  # fmt: skip
    service_principals: list[ServicePrincipalDef] = Field(
        default_factory=list, description="[{name, appId, secret, roleAssignments}]")


class LabDefinition(_LabModel):
    """A whole lab: one subscription, one location, its resource groups, who may sign in."""

    subscription_id: str = Field(
        default=DEFAULT_SUBSCRIPTION_ID,
        description="a GUID such as 8f6a2c1e-5b3d-4c7a-9e21-0d4b6f3a9c10",
    )
    location: str = Field(
        default=DEFAULT_LOCATION, description="an Azure region name such as westeurope"
    )
    resource_groups: list[ResourceGroupDef] = Field(description="a list of resource groups")
    principals: PrincipalsDef = Field(
        default_factory=PrincipalsDef, description="{users: [...], servicePrincipals: [...]}"
    )

    @field_validator("subscription_id")
    @classmethod
    def _check_subscription(cls, value: str) -> str:
        if not _GUID.fullmatch(value):
            raise _fail(
                f"subscriptionId '{value}' is not a GUID; it must look like "
                "8f6a2c1e-5b3d-4c7a-9e21-0d4b6f3a9c10 (32 hex digits in groups of 8-4-4-4-12)"
            )
        return value.lower()

    @field_validator("location")
    @classmethod
    def _check_location(cls, value: str) -> str:
        if not _LOCATION.fullmatch(value):
            raise _fail(
                f"location '{value}' is invalid: it must be an Azure region name of lower-case "
                "letters and digits, such as westeurope or eastus2"
            )
        return value

    @model_validator(mode="after")
    def _cross_references(self) -> LabDefinition:
        groups: dict[str, int] = {}
        accounts: dict[str, FieldPath] = {}
        for g, group in enumerate(self.resource_groups):
            first = groups.setdefault(group.name.casefold(), g)
            if first != g:
                raise _fail(
                    f"resource group name '{group.name}' is already used by resourceGroups"
                    f"[{first}]; resource group names must be unique in the lab (Azure compares "
                    "names without regard to case)",
                    "resourceGroups",
                    g,
                    "name",
                    related=("resourceGroups", first, "name"),
                )
            for a, account in enumerate(group.storage_accounts):
                here: FieldPath = ("resourceGroups", g, "storageAccounts", a, "name")
                other = accounts.setdefault(account.name, here)
                if other != here:
                    raise _fail(
                        f"storage account name '{account.name}' is already used by "
                        f"{format_path(other[:-1])}; storage account names must be unique "
                        "in the whole lab (as they are in all of Azure)",
                        *here,
                        related=other,
                    )
        for where, bd in self._boot_diagnostics():
            target = bd.storage_account
            if target is not None and target not in accounts:
                defined = ", ".join(sorted(accounts)) or "none"
                raise _fail(
                    f"storageUri names storage account '{target}', which is not defined "
                    f"in this lab (defined storage accounts: {defined}); add it to a "
                    "resource group's storageAccounts, or omit storageUri to use managed "
                    "storage",
                    *where,
                    "storageUri",
                )
        return self

    def _boot_diagnostics(self) -> list[tuple[FieldPath, BootDiagnosticsDef]]:
        """Every boot-diagnostics setting with the path it is written at."""
        found: list[tuple[FieldPath, BootDiagnosticsDef]] = []
        for g, group in enumerate(self.resource_groups):
            for v, vm in enumerate(group.virtual_machines):
                path: FieldPath = ("resourceGroups", g, "virtualMachines", v, "bootDiagnostics")
                found.append((path, vm.boot_diagnostics))
            for i, ss in enumerate(group.scale_sets):
                path = ("resourceGroups", g, "scaleSets", i, "virtualMachineProfile",
                        "diagnosticsProfile", "bootDiagnostics")  # fmt: skip
                found.append((path, ss.virtual_machine_profile.boot_diagnostics))
        return found

    def scale_sets(self) -> list[tuple[ResourceGroupDef, ScaleSetDef]]:
        """Every scale set in the lab with its resource group, in file order."""
        return [(group, ss) for group in self.resource_groups for ss in group.scale_sets]

    def virtual_machines(self) -> list[tuple[ResourceGroupDef, VirtualMachineDef]]:
        """Every VM in the lab with its resource group, in file order."""
        return [(group, vm) for group in self.resource_groups for vm in group.virtual_machines]

    def storage_account(self, name: str) -> StorageAccountDef | None:
        """The storage account of that name anywhere in the lab, or None."""
        for group in self.resource_groups:
            for account in group.storage_accounts:
                if account.name == name:
                    return account
        return None

    def resource_group(self, name: str) -> ResourceGroupDef | None:
        """The resource group of that name (case-insensitive), or None."""
        return next((g for g in self.resource_groups if names.same_name(g.name, name)), None)


# --- validation errors to located messages ------------------------------------------------------

_EXPECTED: Final[Mapping[str, str]] = {
    "string_type": "text",
    "int_type": "a whole number",
    "bool_type": "true or false",
    "dict_type": "a mapping of key: value pairs",
    "model_type": "a mapping of field: value pairs",
    "model_attributes_type": "a mapping of field: value pairs",
    "list_type": "a list (items written as '- item')",
}

_SECRET_FIELDS: Final = frozenset({"adminPassword"})


def _tag_of(member: Any) -> str | None:
    if get_origin(member) is Annotated:
        for meta in get_args(member)[1:]:
            if isinstance(meta, Tag):
                return meta.tag
    return None


def _strip(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _alias_of(name: str, info: FieldInfo) -> str:
    if isinstance(info.validation_alias, str):
        return info.validation_alias
    return info.alias or name


def _field_of(model: type[BaseModel], key: str | int) -> FieldInfo | None:
    for name, info in model.model_fields.items():
        if key in (_alias_of(name, info), name):
            return info
    return None


def _resolve(loc: tuple[str | int, ...]) -> tuple[FieldPath, Any]:
    """The data path of a pydantic error location (union tags dropped) and the type there."""
    tp: Any = LabDefinition
    path: list[str | int] = []
    index = 0
    while index < len(loc):
        part = loc[index]
        index += 1
        tp = _strip(tp)
        if get_origin(tp) in (Union, type(int | str)):
            members = get_args(tp)
            tagged = {_tag_of(m): m for m in members}
            if isinstance(part, str) and part in tagged:
                tp = tagged[part]
                continue
            rest = [m for m in members if m is not type(None)]
            tp = rest[0] if len(rest) == 1 else None
            tp = _strip(tp)
        path.append(part)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            info = _field_of(tp, part)
            tp = info.annotation if info is not None else None
        elif get_origin(tp) is list:
            tp = get_args(tp)[0]
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
            if index < len(loc) and loc[index] == "[key]":
                index += 1
        else:
            tp = None
    return tuple(path), _strip(tp)


def _model_at(path: FieldPath) -> type[BaseModel] | None:
    _, tp = _resolve(path)
    if get_origin(tp) in (Union, type(int | str)):
        models = [m for m in map(_strip, get_args(tp)) if isinstance(m, type)]
        tp = next((m for m in models if issubclass(m, BaseModel)), None)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _aliases(model: type[BaseModel]) -> list[str]:
    # `name` first: it is how a reader finds a resource (base classes put their fields first).
    fields = sorted(model.model_fields.items(), key=lambda item: item[0] != "name")
    return [_alias_of(name, info) for name, info in fields]


@dataclass(frozen=True)
class _Problem:
    line: int | None
    field: str | None
    message: str
    #: Missing fields sort after other problems: a misspelt key is reported as unknown first.
    missing: bool = False


class _Locator:
    """Turns pydantic errors into located problems, using the lines the builder recorded."""

    def __init__(self, builder: Builder) -> None:
        self.lines = builder.lines
        self.raw = builder.raw

    def line(self, path: FieldPath) -> int | None:
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None

    def problem(self, error: ErrorDetails) -> _Problem:
        loc = tuple(error["loc"])
        ctx: Mapping[str, Any] = error.get("ctx") or {}
        path, _ = _resolve(loc)
        path = path + tuple(ctx.get("path", ()))
        message = self.message(error, path, ctx)
        related = ctx.get("related")
        if related is not None:
            base, _ = _resolve(loc)
            related_line = self.line(base + tuple(related))
            if related_line is not None:
                message += f" (see line {related_line})"
        return _Problem(
            self.line(path), format_path(path) or None, message, error["type"] == "missing"
        )

    def message(self, error: ErrorDetails, path: FieldPath, ctx: Mapping[str, Any]) -> str:
        kind = error["type"]
        key = path[-1] if path else None
        if kind == "lab_invalid":
            return str(ctx.get("message", error["msg"]))
        if kind == "missing" and isinstance(key, str):
            model = _model_at(path[:-1])
            info = _field_of(model, key) if model is not None else None
            what = f": {info.description}" if info is not None and info.description else ""
            return f"required field '{key}' is missing{what}"
        if kind == "extra_forbidden" and isinstance(key, str):
            model = _model_at(path[:-1])
            allowed = _aliases(model) if model is not None else []
            hint = ""
            if to_camel(key) in allowed and to_camel(key) != key:
                hint = f" (did you mean '{to_camel(key)}'? keys are camelCase)"
            elif close := difflib.get_close_matches(key, allowed, n=1):
                hint = f" (did you mean '{close[0]}'?)"
            return f"unknown field '{key}'{hint}; allowed fields here are: {', '.join(allowed)}"
        if kind == "literal_error":
            return f"must be {ctx.get('expected', 'one of the allowed values')}" + self.got(
                error, path
            )
        if kind in _EXPECTED:
            message = f"must be {_EXPECTED[kind]}" + self.got(error, path)
            if kind == "string_type" and error["input"] is not None:
                message += "; put it in quotes if you mean text"
            if error["input"] is None and kind == "list_type":
                message += "; write [] for an empty list, or leave the key out"
            elif error["input"] is None and kind in ("dict_type", "model_type"):
                message += "; write {} for an empty mapping, or leave the key out"
            return message
        return str(error["msg"])

    def got(self, error: ErrorDetails, path: FieldPath) -> str:
        if error["input"] is None:
            return ", but it is empty (null)"
        if any(part in _SECRET_FIELDS for part in path if isinstance(part, str)):
            return f", but YAML reads it as {describe(error['input'], secret=True)}"
        raw = self.raw.get(path)
        shown = f" {raw!r}" if raw is not None and len(raw) <= 60 else ""
        return f", but YAML reads{shown or ' it'} as {describe(error['input'])}"


def _to_lab_file_error(exc: ValidationError, source: str, builder: Builder) -> LabFileError:
    locator = _Locator(builder)
    problems: list[_Problem] = []
    for error in exc.errors(include_url=False):
        problem = locator.problem(error)
        if problem not in problems:
            problems.append(problem)
    problems.sort(key=lambda p: (p.missing, p.line if p.line is not None else 0))
    first, rest = problems[0], problems[1:]
    message = first.message
    if rest:
        message += f"\n... and {len(rest)} more problem{'s' if len(rest) > 1 else ''}:"
        for p in rest:
            where = f"{source}:{p.line}" if p.line is not None else source
            message += f"\n{where}: {p.field + ': ' if p.field else ''}{p.message}"
    return LabFileError(message, source=source, line=first.line, field=first.field)


# --- the loader ---------------------------------------------------------------------------------


def parse_lab_definition(
    text: str, *, source: str, known_images: Collection[str] | None = None
) -> LabDefinition:
    """Parse and validate a lab file's YAML text.

    `source` names the file in error messages. When `known_images` is given, every VM's image
    must be one of them. Raises `LabFileError` for every problem, located by line and field;
    when there are several, the first (by line) is the error's own location and the message
    lists the others, each located.
    """
    root = compose(text, source)
    if root is None or (isinstance(root, ScalarNode) and root.tag == NULL_TAG and not root.value):
        raise LabFileError(
            "the file is empty; a lab file is a mapping with at least a resourceGroups list "
            "(see examples/demo.yaml)",
            source=source,
            line=1,
            field=None,
        )
    builder = Builder(source)
    builder.lines[()] = root.start_mark.line + 1
    data = builder.build(root, (), 0)
    if not isinstance(data, dict):
        raise LabFileError(
            "the top level of a lab file must be a mapping with the fields subscriptionId, "
            f"location and resourceGroups, but YAML reads it as {describe(data)}",
            source=source,
            line=root.start_mark.line + 1,
            field=None,
        )
    context = {"known_images": None if known_images is None else frozenset(known_images)}
    try:
        return LabDefinition.model_validate(data, context=context, by_alias=True, by_name=False)
    except ValidationError as exc:
        raise _to_lab_file_error(exc, source, builder) from exc
