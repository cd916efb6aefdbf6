"""Routes of the daemon API for the lab's directory: users, service principals, role
assignments, and the authority's signing keys. Thin: parse, call the service, serialise.
Secrets arrive in request bodies (never in URLs, which logs keep) and leave once."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from lab.api.app_state import lab_of
from lab.api.security.signing import KeySet
from lab.domain.identity import TENANT_ID, Principal, RoleAssignmentRecord
from lab.services.lab import Lab

router = APIRouter(prefix="/v1")


def principal_json(p: Principal) -> dict[str, Any]:
    out: dict[str, Any] = {"objectId": p.object_id, "type": p.type, "name": p.name}
    if p.app_id:
        out["appId"] = p.app_id
        out["certificates"] = sorted(p.certificates)
    return out


def assignment_json(lab: Lab, r: RoleAssignmentRecord) -> dict[str, Any]:
    who = lab.identity.get(r.principal_id)
    return {"name": r.name, "id": r.resource_id, "principalId": r.principal_id,
            "principalName": who.sign_in_name if who else None,
            "principalType": r.principal_type, "roleDefinitionName": r.role,
            "scope": r.scope}  # fmt: skip


class UserBody(BaseModel):
    username: str
    password: str


class PasswordBody(BaseModel):
    password: str


class RoleBody(BaseModel):
    role: str
    scope: str = "/"


class SpBody(BaseModel):
    name: str
    roles: list[RoleBody] = []
    #: (base64url SHA-1 thumbprint, certificate PEM) to sign in with instead of a secret.
    certificateThumbprint: str | None = None
    certificatePem: str | None = None


class AssignmentBody(BaseModel):
    assignee: str
    role: str
    scope: str = "/"


@router.get("/principals")
def list_principals(request: Request) -> list[dict[str, Any]]:
    return [principal_json(p) for p in lab_of(request).identity.principals()]


@router.post("/users")
def add_user(request: Request, body: UserBody) -> dict[str, Any]:
    return principal_json(lab_of(request).identity.add_user(body.username, body.password))


@router.put("/users/{username}/password")
def set_password(request: Request, username: str, body: PasswordBody) -> dict[str, Any]:
    return principal_json(lab_of(request).identity.set_password(username, body.password))


@router.delete("/principals/{ref}")
def remove_principal(request: Request, ref: str) -> dict[str, Any]:
    return principal_json(lab_of(request).identity.remove(ref))


@router.post("/service-principals")
def create_sp_for_rbac(request: Request, body: SpBody) -> dict[str, Any]:
    """`az ad sp create-for-rbac`'s answer: appId, displayName, password (shown once), tenant."""
    cert = None
    if body.certificatePem and body.certificateThumbprint:
        cert = (body.certificateThumbprint, body.certificatePem)
    sp, secret = lab_of(request).identity.create_sp_for_rbac(
        body.name, [(r.role, r.scope) for r in body.roles], certificate=cert
    )
    return {"appId": sp.app_id, "displayName": sp.name, "password": secret, "tenant": TENANT_ID}


@router.get("/role-assignments")
def list_assignments(request: Request, assignee: str | None = None) -> list[dict[str, Any]]:
    lab = lab_of(request)
    principal_id = lab.identity.find(assignee).object_id if assignee else None
    return [assignment_json(lab, r) for r in lab.identity.assignments(principal_id)]


@router.post("/role-assignments")
def create_assignment(request: Request, body: AssignmentBody) -> dict[str, Any]:
    lab = lab_of(request)
    return assignment_json(
        lab, lab.identity.create_assignment(body.assignee, body.role, body.scope)
    )


@router.delete("/role-assignments")
def delete_assignments(
    request: Request, name: str | None = None, assignee: str | None = None,
    role: str | None = None, scope: str | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    lab = lab_of(request)
    gone = lab.identity.delete_assignments(name=name, ref=assignee, role_name=role, scope=scope)
    return [assignment_json(lab, r) for r in gone]


@router.post("/authority/rotate-key")
def rotate_key(request: Request) -> dict[str, Any]:
    """A new signing key; the previous one keeps verifying for a token lifetime."""
    lab = lab_of(request)
    keys = KeySet(lab.settings.tls_dir / "token-keys")
    new = keys.rotate(overlap_s=lab.settings.token_lifetime_minutes * 60)
    return {"kid": new.kid, "published": [k.kid for k in keys.published()]}
