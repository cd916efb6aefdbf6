"""Who may sign in to the lab's authority, and what they may do: principals (users and
service principals) and role assignments, as Microsoft Entra ID and Azure RBAC keep them.

A principal holds no roles itself: its role assignments are separate records (principal,
role, scope), looked up on every request, so revoking one takes effect on the next call and
not when a token expires. Secrets and passwords are kept only as salted scrypt hashes; a
secret is shown once, when it is made.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict

from lab.domain.errors import InvalidInput
from lab.domain.rbac import RoleAssignment, normalise_scope, role

#: The lab's one directory (Entra ID's tenant). Fixed, so tokens and `az account show` agree
#: across restarts and data dirs.
TENANT_ID = "5e71a1c0-0000-4000-8000-00000000ab00"

PrincipalType = Literal["User", "ServicePrincipal"]

_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def hash_secret(secret: str) -> str:
    """A salted scrypt hash of `secret`, in one self-describing string."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P)
    b64 = base64.b64encode
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def secret_matches(secret: str, hashed: str) -> bool:
    try:
        kind, n, r, p, salt, digest = hashed.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(secret.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r),
                             p=int(p))  # fmt: skip
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


def new_secret() -> str:
    """A client secret in Entra ID's style: 40 characters, no look-alike punctuation."""
    return secrets.token_urlsafe(30)[:40]


class Principal(BaseModel):
    """A user (signs in with a username and password) or a service principal (an app id with
    client secrets or certificates)."""

    model_config = ConfigDict(frozen=True)

    object_id: str
    type: PrincipalType
    #: A user's username; a service principal's display name.
    name: str
    #: Service principals: the client id they sign in with.
    app_id: str | None = None
    #: Hashes of the current secrets (a user's password, an app's client secrets).
    secret_hashes: tuple[str, ...] = ()
    #: Service principals: certificates they may sign a client assertion with, as
    #: {base64url SHA-1 thumbprint (`x5t`): PEM of the certificate}.
    certificates: dict[str, str] = {}
    #: A user whose password was made for them (a class's sign-in sheet): it signs in only to
    #: choose a new one, as Entra ID's temporary passwords.
    must_change_password: bool = False

    def has_secret(self, secret: str) -> bool:
        return any(secret_matches(secret, h) for h in self.secret_hashes)

    @property
    def sign_in_name(self) -> str:
        """What a token and `az account show` call it: the app id or the username."""
        return self.app_id or self.name


class RoleAssignmentRecord(BaseModel):
    """One Azure role assignment: a principal holds a built-in role at a scope."""

    model_config = ConfigDict(frozen=True)

    #: The assignment's name in ARM (a GUID), also its id's last segment.
    name: str
    principal_id: str
    principal_type: PrincipalType
    role: str
    scope: str

    @property
    def resource_id(self) -> str:
        scope = "" if self.scope == "/" else self.scope
        return f"{scope}/providers/Microsoft.Authorization/roleAssignments/{self.name}"

    def grant(self) -> RoleAssignment:
        return RoleAssignment(role(self.role), self.scope)


def new_user(username: str, password: str) -> Principal:
    check_username(username)
    check_password(password, target="password")
    return Principal(object_id=str(uuid.uuid4()), type="User", name=username,
                     secret_hashes=(hash_secret(password),))  # fmt: skip


def new_service_principal(display_name: str, app_id: str | None = None) -> Principal:
    if not display_name.strip() or len(display_name) > 120:
        raise InvalidInput("a service principal's --name is 1-120 characters", target="name")
    return Principal(object_id=str(uuid.uuid4()), type="ServicePrincipal",
                     name=display_name.strip(), app_id=app_id or str(uuid.uuid4()))  # fmt: skip


def new_assignment(principal: Principal, role_name: str, scope: str) -> RoleAssignmentRecord:
    return RoleAssignmentRecord(name=str(uuid.uuid4()), principal_id=principal.object_id,
                                principal_type=principal.type, role=role(role_name).name,
                                scope=normalise_scope(scope))  # fmt: skip


def check_username(username: str) -> None:
    if not _USERNAME.match(username):
        raise InvalidInput(f"invalid username {username!r}: 1-64 letters, digits, '.', '_', "
                           "'@' or '-', starting with a letter or digit",
                           target="username")  # fmt: skip


def check_password(password: str, *, target: str) -> None:
    if len(password) < 8:
        raise InvalidInput("a password needs at least 8 characters", target=target)
