"""Bearer tokens: the two kinds the lab issues, verified by one function on every request.

- **Authority tokens** (`lab/api/azure/authority.py`, what `az login` and `azure-identity`
  get): RS256, signed with the authority's published keys (`signing.KeySet`). They name a
  principal (`oid`), never its roles: its role assignments are read from the lab's directory
  at every request, so a revoked assignment or a removed principal counts at once.
- **Lab tokens** (`lab token`, for scripts and tests): HS256 JWTs signed with a per-lab secret
  (`<data dir>/tls/token-signing.key`, mode 0600), carrying their role assignments (`roles`:
  a list of `{"role", "scope"}`, plus `actions` and `notActions` for a custom role).

Both have Azure's audience and issue/expiry times. Anything else (expired, wrong signature,
wrong audience, `alg: none`, missing) is refused with a 401 and Azure's body.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from lab.api.azure.errors import (
    AuthenticationFailed,
    ExpiredAuthenticationToken,
    InvalidAuthenticationToken,
)
from lab.api.security.files import private_dir, private_file
from lab.api.security.signing import KeySet
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
#: The resource ids a management token may be for, as the metadata endpoint lists them: the
#: SDKs ask for the first, the Azure CLI for what the metadata names.
AUDIENCES = (AUDIENCE, "https://management.core.windows.net/")
ISSUER = "https://serial-console-lab.local/"
ROLES = ROLE_NAMES
#: An authority token's principal -> its role assignments now, or None if it is gone.
GrantsOf = Callable[[str], tuple[RoleAssignment, ...] | None]


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


@dataclass(frozen=True)
class TokenVerifier:
    """What verifying either kind of token needs."""

    lab_key: bytes
    authority_keys: KeySet | None = None
    grants_of: GrantsOf | None = None


def verify(key: bytes | TokenVerifier, authorization: str | None,
           audiences: Sequence[str] = AUDIENCES) -> Principal:  # fmt: skip
    """The principal of an `Authorization: Bearer ...` header, or AuthenticationFailed (ARM's
    401, by its code: no token, an invalid one, an expired one).
    A bare key verifies lab tokens only (the CLI's own checks, unit tests). `audiences`: what
    an authority token may be for (the lab's Graph takes only its own)."""
    verifier = key if isinstance(key, TokenVerifier) else TokenVerifier(key)
    if not authorization or not authorization.lower().startswith("bearer "):
        raise AuthenticationFailed("Authentication failed. The 'Authorization' header is missing.")
    token = authorization[7:].strip()
    try:
        if jwt.get_unverified_header(token).get("alg") == "RS256":
            return _verify_authority_token(verifier, token, audiences)
        if AUDIENCE not in audiences:
            raise jwt.InvalidAudienceError("a lab token is for the management API only")
        claims = jwt.decode(token, verifier.lab_key, algorithms=["HS256"], audience=AUDIENCE,
                            issuer=ISSUER)  # fmt: skip
    except jwt.ExpiredSignatureError:
        raise ExpiredAuthenticationToken(
            "The access token expiry UTC time is earlier than current UTC time."
        ) from None
    except jwt.InvalidTokenError as exc:
        raise InvalidAuthenticationToken(f"The access token is invalid: {exc}.") from None
    try:
        assignments = tuple(_assignment(a) for a in claims["roles"])
        return Principal(str(claims["name"]), str(claims["oid"]), assignments)
    except (KeyError, TypeError, LabError) as exc:
        raise InvalidAuthenticationToken(f"The access token's claims are invalid: {exc}.") from None


def _verify_authority_token(verifier: TokenVerifier, token: str,
                            audiences: Sequence[str]) -> Principal:  # fmt: skip
    """An RS256 token of the lab's authority: its key by `kid`, then the principal's roles as
    they are now. jwt's own errors reach `verify`'s handlers."""
    if verifier.authority_keys is None or verifier.grants_of is None:
        raise jwt.InvalidTokenError("this endpoint takes no authority tokens")
    claims = verifier.authority_keys.decode(token, list(audiences),
                                            require=("exp", "iat", "oid", "iss"))  # fmt: skip
    grants = verifier.grants_of(str(claims["oid"]))
    if grants is None:
        raise InvalidAuthenticationToken(
            f"The principal '{claims.get('name', claims['oid'])}' of the access token no longer "
            "exists in the lab.")  # fmt: skip
    return Principal(str(claims.get("name") or claims.get("appid") or claims["oid"]),
                     str(claims["oid"]), grants)


def issue_authority_token(
    keys: KeySet, *, issuer: str, audience: str, object_id: str, name: str,
    app_id: str | None, tenant: str, expires_in: float,
) -> str:  # fmt: skip
    """An access token of the lab's authority, for one principal (never its roles)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "aud": audience, "iss": issuer, "iat": now, "nbf": now, "exp": now + int(expires_in),
        "oid": object_id, "sub": object_id, "tid": tenant, "name": name, "ver": "1.0",
        "idtyp": "app" if app_id else "user", "jti": str(uuid.uuid4()),
    }  # fmt: skip
    if app_id:
        claims["appid"] = app_id
    else:
        claims["upn"] = claims["unique_name"] = name
    return keys.sign(claims)
