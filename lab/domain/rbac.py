"""Azure role-based access control, as much as the lab needs: built-in roles with Azure's
action strings (wildcards included), custom roles (a name, `Actions` and `NotActions`, as
`az role definition create` takes them), and role assignments at subscription, resource-group
or resource scope.

An assignment grants its role's actions on its scope and everything under it: a role at
`/subscriptions/S/resourceGroups/rg` covers every VM in `rg`, and nothing in another group.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from lab.domain.errors import (
    InvalidActionOrNotAction,
    InvalidInput,
    InvalidRoleAssignmentScope,
    RoleDefinitionDoesNotExist,
    RoleDefinitionLimitExceeded,
)
from lab.domain.resource_ids import same


@dataclass(frozen=True)
class RoleDefinition:
    name: str
    actions: tuple[str, ...]
    not_actions: tuple[str, ...] = ()
    #: A custom role travels in the token with its actions; a built-in one by name.
    custom: bool = False
    #: A built-in role's id in Azure (the same GUID in every tenant), and its description.
    id: str = ""
    description: str = ""

    def allows(self, action: str) -> bool:
        act = action.lower()

        def matches(patterns: tuple[str, ...]) -> bool:
            return any(fnmatchcase(act, p.lower()) for p in patterns)

        return matches(self.actions) and not matches(self.not_actions)


#: Azure's built-in roles (the subset of actions that touches what the lab serves).
BUILTIN_ROLES: dict[str, RoleDefinition] = {
    r.name: r
    for r in (
        RoleDefinition(
            "Reader",
            ("*/read",),
            id="acdd72a7-3385-48ef-bd42-f606fba81ae7",
            description="View all resources, but does not allow you to make any changes.",
        ),
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
            id="9980e02c-c2be-4d73-94e8-173b1dc7cf3c",
            description="Lets you manage virtual machines, but not access to them, and not the "
            "virtual network or storage account they're connected to.",
        ),
        RoleDefinition(
            "Contributor",
            ("*",),
            (
                "Microsoft.Authorization/*/Delete",
                "Microsoft.Authorization/*/Write",
                "Microsoft.Authorization/elevateAccess/Action",
            ),
            id="b24988ac-6180-42a0-ab88-20f7382dd24c",
            description="Grants full access to manage all resources, but does not allow you to "
            "assign roles in Azure RBAC.",
        ),
        RoleDefinition(
            "Owner",
            ("*",),
            id="8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
            description="Grants full access to manage all resources, including the "
            "ability to assign roles in Azure RBAC.",
        ),
    )
}

ROLE_NAMES = tuple(BUILTIN_ROLES)

#: An action string as Azure writes them: `Provider.Namespace/type[/...]/verb`, `*` wildcards.
_ACTION = re.compile(r"^(\*|[A-Za-z0-9*][A-Za-z0-9.*-]*(/[A-Za-z0-9*][A-Za-z0-9.*-]*)+)$")


def custom_role(
    name: str, actions: Sequence[str], not_actions: Sequence[str] = ()
) -> RoleDefinition:
    """A custom role, as `az role definition create` takes one: a name that is not a built-in
    role's, and its `Actions` (at least one) and `NotActions`, each an action string."""
    name = name.strip()
    if not name:
        raise InvalidInput("a custom role needs a name", target="Name")
    if any(same(known, name) for known in ROLE_NAMES):
        raise RoleDefinitionLimitExceeded(
            f"custom role name '{name}' is a built-in role's; choose another", target="Name"
        )
    if not actions:
        raise InvalidInput(f"custom role '{name}' has no Actions; give at least one, e.g. "
                           "Microsoft.SerialConsole/serialPorts/connect/action",
                           target="Actions")  # fmt: skip
    for field, values in (("Actions", actions), ("NotActions", not_actions)):
        for action in values:
            if not isinstance(action, str) or not _ACTION.match(action):
                raise InvalidActionOrNotAction(
                    f"custom role '{name}': {field} entry {action!r} is not an action string "
                    "such as Microsoft.Compute/virtualMachines/read or Microsoft.Compute/*",
                    target=field,
                )
    return RoleDefinition(name, tuple(actions), tuple(not_actions), custom=True)


def role(name: str) -> RoleDefinition:
    for known in BUILTIN_ROLES.values():
        if same(known.name, name):
            return known
    raise RoleDefinitionDoesNotExist(
        f"unknown role '{name}'; the lab knows the built-in roles: {', '.join(ROLE_NAMES)}",
        target="role",
    )


def parse_role_definition(text: str, source: str) -> RoleDefinition:
    """A custom role from a role definition in Azure's JSON shape (what `az role definition
    create --role-definition` reads): `Name`, `Actions`, optional `NotActions`. Other fields
    (`Description`, `AssignableScopes`, `DataActions`, ...) are accepted and ignored."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{source}:{exc.lineno}: not JSON: {exc.msg}",
                           target=source) from None  # fmt: skip
    if not isinstance(doc, dict):
        raise InvalidInput(f'{source}: a role definition is a JSON object {{"Name", "Actions", '
                           '"NotActions"}', target=source)  # fmt: skip
    fields = {k.lower(): v for k, v in doc.items()}
    for field in ("actions", "notactions"):
        value = fields.get(field, [])
        if not isinstance(value, list):
            raise InvalidInput(f"{source}: {field} must be a list of action strings, not "
                               f"{type(value).__name__}", target=field)  # fmt: skip
    name = fields.get("name", fields.get("rolename"))
    if not isinstance(name, str):
        raise InvalidInput(f'{source}: the role definition has no "Name"', target="Name")
    try:
        return custom_role(name, fields.get("actions", []), fields.get("notactions", []))
    except InvalidInput as exc:
        # The same error (class, code), located in the file.
        raise type(exc)(f"{source}: {exc.message}", target=exc.target) from None


def normalise_scope(scope: str) -> str:
    """`/`, `/subscriptions/S`, `/subscriptions/S/resourceGroups/rg`, or a resource id."""
    scope = "/" + scope.strip().strip("/")
    parts = scope.split("/")[1:]
    if scope != "/" and (len(parts) < 2 or parts[0].lower() != "subscriptions"):
        raise InvalidRoleAssignmentScope(
            f"invalid role scope '{scope}'; a scope is '/', /subscriptions/<id>, "
            "/subscriptions/<id>/resourceGroups/<name>, or a resource id",
            target="scope",
        )
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
