"""Azure role-based access control, as much as the lab needs: built-in roles with Azure's
action strings (wildcards included), and role assignments at subscription, resource-group or
resource scope.

An assignment grants its role's actions on its scope and everything under it: a role at
`/subscriptions/S/resourceGroups/rg` covers every VM in `rg`, and nothing in another group.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from lab.domain.errors import InvalidInput


@dataclass(frozen=True)
class RoleDefinition:
    name: str
    actions: tuple[str, ...]
    not_actions: tuple[str, ...] = ()

    def allows(self, action: str) -> bool:
        act = action.lower()

        def matches(patterns: tuple[str, ...]) -> bool:
            return any(fnmatchcase(act, p.lower()) for p in patterns)

        return matches(self.actions) and not matches(self.not_actions)


#: Azure's built-in roles (the subset of actions that touches what the lab serves).
BUILTIN_ROLES: dict[str, RoleDefinition] = {
    r.name: r
    for r in (
        RoleDefinition("Reader", ("*/read",)),
        RoleDefinition(
            "Virtual Machine Contributor",
            (
                "Microsoft.Authorization/*/read",
                "Microsoft.Compute/virtualMachines/*",
                "Microsoft.Compute/virtualMachineScaleSets/*",
                "Microsoft.Compute/locations/*",
                "Microsoft.Resources/subscriptions/resourceGroups/read",
                "Microsoft.SerialConsole/serialPorts/connect/action",
                "Microsoft.Storage/storageAccounts/listKeys/action",
                "Microsoft.Storage/storageAccounts/read",
            ),
        ),
        RoleDefinition(
            "Contributor",
            ("*",),
            (
                "Microsoft.Authorization/*/Delete",
                "Microsoft.Authorization/*/Write",
                "Microsoft.Authorization/elevateAccess/Action",
            ),
        ),
        RoleDefinition("Owner", ("*",)),
    )
}

ROLE_NAMES = tuple(BUILTIN_ROLES)


def role(name: str) -> RoleDefinition:
    for known in BUILTIN_ROLES.values():
        if known.name.lower() == name.lower():
            return known
    raise InvalidInput(
        f"unknown role '{name}'; the lab knows the built-in roles: {', '.join(ROLE_NAMES)}",
        target="role", code="RoleDefinitionDoesNotExist",
    )  # fmt: skip


def normalise_scope(scope: str) -> str:
    """`/`, `/subscriptions/S`, `/subscriptions/S/resourceGroups/rg`, or a resource id."""
    scope = "/" + scope.strip().strip("/")
    parts = scope.split("/")[1:]
    if scope != "/" and (len(parts) < 2 or parts[0].lower() != "subscriptions"):
        raise InvalidInput(
            f"invalid role scope '{scope}'; a scope is '/', /subscriptions/<id>, "
            "/subscriptions/<id>/resourceGroups/<name>, or a resource id",
            target="scope", code="InvalidRoleAssignmentScope",
        )  # fmt: skip
    return scope


def in_scope(resource_id: str, scope: str) -> bool:
    """Whether `resource_id` is the scope or lies under it (ARM ids are case-insensitive)."""
    scope = normalise_scope(scope).lower()
    rid = "/" + resource_id.strip("/").lower()
    return scope == "/" or rid == scope or rid.startswith(scope + "/")


@dataclass(frozen=True)
class RoleAssignment:
    role: RoleDefinition
    scope: str

    def grants(self, action: str, resource_id: str) -> bool:
        return self.role.allows(action) and in_scope(resource_id, self.scope)
