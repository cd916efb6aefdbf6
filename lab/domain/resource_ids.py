"""Azure resource ids, built and read in one place, and Azure's case-insensitive names.

ARM compares subscription ids, group names, resource types and names without regard to case,
and answers with the spelling the resource was created with: `same` is that comparison,
`resource_id` that spelling.
"""

from __future__ import annotations

from dataclasses import dataclass

VMS = "Microsoft.Compute/virtualMachines"
SCALE_SETS = "Microsoft.Compute/virtualMachineScaleSets"
STORAGE_ACCOUNTS = "Microsoft.Storage/storageAccounts"


def same(a: str | None, b: str | None) -> bool:
    """Whether two Azure names (or ids) are the same name: case does not count."""
    if a is None or b is None:
        return a is b
    return a.casefold() == b.casefold()


def subscription_id(subscription: str) -> str:
    return f"/subscriptions/{subscription}"


def group_id(subscription: str, group: str) -> str:
    return f"{subscription_id(subscription)}/resourceGroups/{group}"


def resource_id(subscription: str, group: str, type_: str, name: str, *child: str) -> str:
    """`/subscriptions/S/resourceGroups/G/providers/<type_>/<name>[/<child type>/<name>...]`."""
    return "/".join((group_id(subscription, group), "providers", type_, name, *child))


def vm_id(subscription: str, group: str, name: str) -> str:
    return resource_id(subscription, group, VMS, name)


def scale_set_id(subscription: str, group: str, name: str) -> str:
    return resource_id(subscription, group, SCALE_SETS, name)


def instance_id(subscription: str, group: str, scale_set: str, instance: str) -> str:
    return resource_id(subscription, group, SCALE_SETS, scale_set, "virtualMachines", instance)


def storage_account_id(subscription: str, group: str, name: str) -> str:
    return resource_id(subscription, group, STORAGE_ACCOUNTS, name)


@dataclass(frozen=True)
class ResourceId:
    """A parsed id (or RBAC scope); the parts it lacks are None."""

    subscription: str | None
    group: str | None
    #: The provider's type path and names below the group: ("Microsoft.Compute",
    #: "virtualMachines", "vm1", ...).
    rest: tuple[str, ...]


def parse(rid: str) -> ResourceId:
    """Read an id or a scope: `/`, `/subscriptions/S`, `.../resourceGroups/G`, or deeper."""
    parts = [p for p in rid.split("/") if p]
    subscription = group = None
    if len(parts) >= 2 and same(parts[0], "subscriptions"):
        subscription = parts[1]
        parts = parts[2:]
        if len(parts) >= 2 and same(parts[0], "resourceGroups"):
            group = parts[1]
            parts = parts[2:]
    if parts and same(parts[0], "providers"):
        parts = parts[1:]
    return ResourceId(subscription, group, tuple(parts))


def not_found_message(type_: str, name: str, group: str) -> str:
    """ARM's message for a resource that is not there."""
    return f"The Resource '{type_}/{name}' under resource group '{group}' was not found."


def placed(subscription: str, group: str, *, in_subscription: str | None = None,
           in_group: str | None = None) -> bool:  # fmt: skip
    """Whether a resource of `subscription`/`group` lies in the subscription and group asked
    for (None: any)."""
    return (in_subscription is None or same(subscription, in_subscription)) and (
        in_group is None or same(group, in_group)
    )
