"""Microsoft.Authorization (read-only): the lab's role assignments and built-in role
definitions, so `az role assignment list` and `az role definition list` answer. Assignments
are made with `lab role assignment create` (or `lab sp create-for-rbac --role`).

Routes take any scope (`/subscriptions/S`, a resource group, a resource): a listing shows the
assignments at, above and below it that the caller may read, narrowed by `$filter`
(`atScope()`, `principalId eq '...'`, `assignedTo('...')`), as ARM does.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from lab.api.azure.common import ApiVersion, Caller, lab_of, require_action
from lab.api.azure.errors import RoleDefinitionNotFound, UnsupportedQuery
from lab.domain.errors import RoleAssignmentNotFound
from lab.domain.identity import RoleAssignmentRecord
from lab.domain.rbac import BUILTIN_ROLES, RoleDefinition, in_scope, normalise_scope
from lab.domain.resource_ids import parse, same, subscription_id

router = APIRouter(tags=["authorization"])
_NS = "Microsoft.Authorization"
_READ = f"{_NS}/roleAssignments/read"
Filter = Annotated[str | None, Query(alias="$filter")]
_PRINCIPAL = re.compile(r"^\s*(?:principalId\s+eq\s+'([^']*)'|assignedTo\('([^']*)'\))\s*$", re.I)
_ROLE_NAME = re.compile(r"^\s*roleName\s+eq\s+'([^']*)'\s*$", re.I)


def _scope(scope: str) -> str:
    return normalise_scope("/" + scope if scope else "/")


def definition_id(role: RoleDefinition, scope: str) -> str:
    sub = parse(scope).subscription
    prefix = subscription_id(sub) if sub else ""
    return f"{prefix}/providers/{_NS}/roleDefinitions/{role.id}"


def definition_json(role: RoleDefinition, scope: str) -> dict[str, Any]:
    return {"id": definition_id(role, scope), "name": role.id,
            "type": f"{_NS}/roleDefinitions",
            "properties": {"roleName": role.name, "type": "BuiltInRole",
                           "description": role.description, "assignableScopes": ["/"],
                           "permissions": [{"actions": list(role.actions),
                                            "notActions": list(role.not_actions),
                                            "dataActions": [], "notDataActions": []}]}}  # fmt: skip


def assignment_json(record: RoleAssignmentRecord, asked_scope: str) -> dict[str, Any]:
    role = BUILTIN_ROLES[record.role]
    return {"id": record.resource_id, "name": record.name, "type": f"{_NS}/roleAssignments",
            "properties": {"roleDefinitionId": definition_id(role, asked_scope),
                           "principalId": record.principal_id,
                           "principalType": record.principal_type, "scope": record.scope,
                           "condition": None, "conditionVersion": None}}  # fmt: skip


def _related(a: str, b: str) -> bool:
    """Whether one scope holds the other (an assignment above, at or below a scope)."""
    return in_scope(a, b) or in_scope(b, a)


@router.get("/{scope:path}/providers/Microsoft.Authorization/roleAssignments")
async def list_assignments(
    request: Request, scope: str, _v: ApiVersion, principal: Caller, filter_: Filter = None
) -> dict[str, Any]:
    at = _scope(scope)
    require_action(principal, _READ, at)
    records = [r for r in lab_of(request).identity.assignments()
               if _related(r.scope, at) and principal.may(_READ, r.scope)]  # fmt: skip
    for clause in (filter_ or "").split(" and ") if filter_ else []:
        if clause.strip().lower() == "atscope()":
            records = [r for r in records if in_scope(at, r.scope)]  # at or above
        elif m := _PRINCIPAL.match(clause):
            wanted = (m.group(1) or m.group(2)).lower()
            records = [r for r in records if r.principal_id.lower() == wanted]
        else:
            raise UnsupportedQuery(f"The filter '{filter_}' is not supported. Use atScope(), "
                                   "principalId eq '<id>' or assignedTo('<id>').",
                                   target="$filter")  # fmt: skip
    return {"value": [assignment_json(r, at) for r in records]}


@router.get("/{scope:path}/providers/Microsoft.Authorization/roleAssignments/{name}")
async def get_assignment(
    request: Request, scope: str, name: str, _v: ApiVersion, principal: Caller
) -> dict[str, Any]:
    at = _scope(scope)
    require_action(principal, _READ, at)
    for r in lab_of(request).identity.assignments():
        if same(r.name, name) and same(r.scope, at):
            return assignment_json(r, at)
    raise RoleAssignmentNotFound(f"The role assignment '{name}' is not found.",
                                 target=name)  # fmt: skip


@router.get("/{scope:path}/providers/Microsoft.Authorization/roleDefinitions")
async def list_definitions(
    scope: str, _v: ApiVersion, principal: Caller, filter_: Filter = None
) -> dict[str, Any]:
    at = _scope(scope)
    require_action(principal, f"{_NS}/roleDefinitions/read", at)
    roles = list(BUILTIN_ROLES.values())
    if filter_:
        m = _ROLE_NAME.match(filter_)
        if not m and "type eq" not in filter_.lower():
            raise UnsupportedQuery(f"The filter '{filter_}' is not supported. Use roleName eq "
                                   "'<name>'.", target="$filter")  # fmt: skip
        if m:
            roles = [r for r in roles if same(r.name, m.group(1))]
    return {"value": [definition_json(r, at) for r in roles]}


@router.get("/{scope:path}/providers/Microsoft.Authorization/roleDefinitions/{role_id}")
async def get_definition(scope: str, role_id: str, _v: ApiVersion,
                         principal: Caller) -> dict[str, Any]:  # fmt: skip
    at = _scope(scope)
    require_action(principal, f"{_NS}/roleDefinitions/read", at)
    for r in BUILTIN_ROLES.values():
        if r.id == role_id.lower():
            return definition_json(r, at)
    raise RoleDefinitionNotFound(f"The role definition '{role_id}' could not be found.",
                                 target=role_id)  # fmt: skip
