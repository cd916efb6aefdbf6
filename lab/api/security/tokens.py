"""Bearer tokens the lab issues (`lab token`) and verifies on every API request.

HS256 JWTs signed with a per-lab secret (`<data dir>/tls/token-signing.key`, mode 0600), with
Azure's audience and the claims the API needs: who (`name`, `oid`), their role assignments
(`roles`: a list of `{"role", "scope"}`, plus `actions` and `notActions` for a custom role),
issue and expiry times. Anything else (expired, wrong signature, wrong audience, `alg: none`,
missing) is refused with a 401 and Azure's body.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from lab.api.security.files import private_dir, private_file
from lab.domain.errors import InvalidInput, LabError
from lab.domain.rbac import (
    ROLE_NAMES,
    RoleAssignment,
    RoleDefinition,
    custom_role,
    normalise_scope,
    role,
)

AUDIENCE = "https://management.azure.com/"
ISSUER = "https://serial-console-lab.local/"
ROLES = ROLE_NAMES


class AuthenticationFailed(LabError):
    code = "InvalidAuthenticationToken"
    status = 401


@dataclass(frozen=True)
class Principal:
    name: str
    object_id: str
    assignments: tuple[RoleAssignment, ...]

    def may(self, action: str, resource_id: str) -> bool:
        return any(a.grants(action, resource_id) for a in self.assignments)


def signing_key(path: Path) -> bytes:
    """The lab's token signing secret, created on first use (mode 0600, in a 0700 directory)."""
    private_dir(path.parent)
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return key
    private_file(path)  # one made by an older lab, or loosened by hand
    return key


def _assignment_claim(definition: str | RoleDefinition, scope: str) -> dict[str, Any]:
    if isinstance(definition, str):
        return {"role": role(definition).name, "scope": normalise_scope(scope)}
    # A custom role is not stored anywhere: the (signed) token carries its actions.
    return {"role": definition.name, "scope": normalise_scope(scope),
            "actions": list(definition.actions),
            "notActions": list(definition.not_actions)}  # fmt: skip


def _assignment(claim: dict[str, Any]) -> RoleAssignment:
    if "actions" in claim:
        definition = custom_role(str(claim["role"]), list(claim["actions"]),
                                 list(claim.get("notActions", [])))  # fmt: skip
    else:
        definition = role(claim["role"])
    return RoleAssignment(definition, normalise_scope(claim["scope"]))


def issue(
    key: bytes, *, user: str, roles: Sequence[tuple[str | RoleDefinition, str]],
    expires_in: float = 3600,
) -> str:  # fmt: skip
    """A token for `user` holding `roles`: (built-in role name or custom role, scope) pairs,
    checked here."""
    if not roles:
        raise InvalidInput("a token needs at least one role assignment", target="role")
    assignments = [_assignment_claim(r, s) for r, s in roles]
    now = int(time.time())
    claims = {"aud": AUDIENCE, "iss": ISSUER, "iat": now, "nbf": now,
              "exp": now + int(expires_in), "name": user,
              "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"lab-user:{user}")),
              "roles": assignments}  # fmt: skip
    return jwt.encode(claims, key, algorithm="HS256")


def verify(key: bytes, authorization: str | None) -> Principal:
    """The principal of an `Authorization: Bearer ...` header, or AuthenticationFailed."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise AuthenticationFailed(
            "Authentication failed. The 'Authorization' header is missing.",
            code="AuthenticationFailed",
        )
    token = authorization[7:].strip()
    try:
        claims = jwt.decode(token, key, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER)
    except jwt.ExpiredSignatureError:
        raise AuthenticationFailed(
            "The access token expiry UTC time is earlier than current UTC time.",
            code="ExpiredAuthenticationToken",
        ) from None
    except jwt.InvalidTokenError as exc:
        raise AuthenticationFailed(f"The access token is invalid: {exc}.") from None
    try:
        assignments = tuple(_assignment(a) for a in claims["roles"])
        return Principal(str(claims["name"]), str(claims["oid"]), assignments)
    except (KeyError, TypeError, LabError) as exc:
        raise AuthenticationFailed(f"The access token's claims are invalid: {exc}.") from None
