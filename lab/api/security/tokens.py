"""Bearer tokens the lab issues (`lab token`) and verifies on every API request.

HS256 JWTs signed with a per-lab secret (`<data dir>/tls/token-signing.key`, mode 0600), with
Azure's audience and the claims the API needs: who (`name`, `oid`), their role assignments
(`roles`: a list of `{"role", "scope"}`), issue and expiry times. Anything else (expired, wrong
signature, wrong audience, `alg: none`, missing) is refused with a 401 and Azure's body.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt

from lab.domain.errors import InvalidInput, LabError
from lab.domain.rbac import ROLE_NAMES, RoleAssignment, normalise_scope, role

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
    """The lab's token signing secret, created on first use (mode 0600)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key)
        return key


def issue(key: bytes, *, user: str, roles: list[tuple[str, str]], expires_in: float = 3600) -> str:
    """A token for `user` holding `roles`: (role name, scope) pairs, checked here."""
    if not roles:
        raise InvalidInput("a token needs at least one role assignment", target="role")
    assignments = [{"role": role(r).name, "scope": normalise_scope(s)} for r, s in roles]
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
        assignments = tuple(
            RoleAssignment(role(a["role"]), normalise_scope(a["scope"])) for a in claims["roles"]
        )
        return Principal(str(claims["name"]), str(claims["oid"]), assignments)
    except (KeyError, TypeError, LabError) as exc:
        raise AuthenticationFailed(f"The access token's claims are invalid: {exc}.") from None
