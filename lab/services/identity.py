"""The lab's directory: users, service principals and their role assignments, kept in
`<data dir>/state/resources.json` beside the other resources.

The authority (`lab/api/azure/authority.py`) signs principals in with what this service
checks; every API request then asks it for the caller's current role assignments.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from lab.domain.errors import (
    CodeExpired,
    Conflict,
    InvalidInput,
    NotFound,
    PrincipalNotFound,
    RoleAssignmentExists,
    RoleAssignmentNotFound,
)
from lab.domain.identity import (
    Principal,
    RoleAssignmentRecord,
    check_password,
    hash_secret,
    new_assignment,
    new_secret,
    new_service_principal,
    new_user,
)
from lab.domain.rbac import RoleAssignment, normalise_scope, role
from lab.domain.resource_ids import same
from lab.storage.state import StateFile

_PRINCIPALS = "principals"
_ASSIGNMENTS = "roleAssignments"


#: Verified secrets remembered in memory (a keyed digest, never the secret): scrypt costs
#: ~50 ms of CPU a check, which capped the token endpoint at 40 requests/s on 2 cores.
VERIFIED_CACHE_SIZE = 1024


class IdentityService:
    def __init__(self, state: StateFile) -> None:
        self.state = state
        self._pepper = secrets.token_bytes(32)
        self._verified: dict[bytes, None] = {}
        self._verified_lock = threading.Lock()  # the authority checks secrets in threads
        state.section(_PRINCIPALS, dict[str, Principal], "the users and service principals")
        state.section(_ASSIGNMENTS, dict[str, RoleAssignmentRecord], "the role assignments")

    # -- principals --------------------------------------------------------------------------

    def principals(self) -> builtins.list[Principal]:
        stored = self.state.read().get(_PRINCIPALS, {}).values()
        return sorted((Principal.model_validate(p) for p in stored), key=lambda p: p.name)

    def get(self, object_id: str) -> Principal | None:
        raw = self.state.read().get(_PRINCIPALS, {}).get(object_id)
        return None if raw is None else Principal.model_validate(raw)

    def find(self, ref: str) -> Principal:
        """A principal by username, app id, display name or object id (any case)."""
        for p in self.principals():
            if ref.lower() in {p.object_id, p.name.lower(), (p.app_id or "").lower()}:
                return p
        raise PrincipalNotFound(f"no user or service principal '{ref}' in the lab "
                                "(`lab user ls`)", target=ref)  # fmt: skip

    def secret_ok(self, principal: Principal, secret: str) -> bool:
        """Whether `secret` is one of the principal's (its password, a client secret). A
        success is remembered until the principal's secrets change or the daemon restarts."""
        key = hmac.new(self._pepper, "\0".join((principal.object_id, secret,
                                                 *principal.secret_hashes)).encode(),
                       hashlib.sha256).digest()  # fmt: skip
        with self._verified_lock:
            if key in self._verified:
                return True
        if not principal.has_secret(secret):
            return False
        with self._verified_lock:
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                self._verified.pop(next(iter(self._verified)))
            self._verified[key] = None
        return True

    def user(self, username: str) -> Principal | None:
        return next((p for p in self.principals()
                     if p.type == "User" and same(p.name, username)), None)  # fmt: skip

    def app(self, app_id: str) -> Principal | None:
        return next((p for p in self.principals()
                     if same(p.app_id or "", app_id)), None)  # fmt: skip

    def _save(self, principal: Principal) -> Principal:
        principals = self.state.read().get(_PRINCIPALS, {})
        principals[principal.object_id] = principal.model_dump(mode="json")
        self.state.update(_PRINCIPALS, principals)
        return principal

    def add_user(self, username: str, password: str, *, temporary: bool = False) -> Principal:
        """`temporary`: a password made for the user, good to sign in once and choose theirs."""
        if self.user(username) is not None:
            raise Conflict(f"user '{username}' exists already (`lab user passwd` changes a "
                           "password)", target=username)  # fmt: skip
        made = new_user(username, password)
        return self._save(made.model_copy(update={"must_change_password": temporary}))

    def set_password(self, username: str, password: str, *, temporary: bool = False,
                     ) -> Principal:  # fmt: skip
        """`temporary`: the user must choose a new one when they next sign in."""
        user = self.user(username)
        if user is None:
            raise NotFound(f"no user '{username}' (`lab user ls`)", target=username)
        check_password(password, target="password")
        return self._save(user.model_copy(update={"secret_hashes": (hash_secret(password),),
                                                  "must_change_password": temporary}))

    def change_password(self, username: str, current: str, new: str) -> Principal:
        """A user's own change: the current password proves who it is (a temporary one
        included); the new one must differ from it."""
        user = self.user(username)
        if user is None or not self.secret_ok(user, current):
            raise InvalidInput("the username or the current password is wrong",
                               target="currentPassword")  # fmt: skip
        if new == current:
            raise InvalidInput("choose a new password, not the one you have",
                               target="newPassword")  # fmt: skip
        check_password(new, target="newPassword")
        return self.set_password(username, new)

    def create_sp_for_rbac(
        self, name: str, roles: Sequence[tuple[str, str]], *, certificate: tuple[str, str]
        | None = None,
    ) -> tuple[Principal, str | None]:  # fmt: skip
        """A service principal with a new client secret (or, given (x5t, PEM), a certificate
        instead) and the role assignments `roles` ((role, scope) pairs). The secret is
        returned once and kept only as a hash."""
        for role_name, scope in roles:  # all checked before anything is made
            role(role_name)
            normalise_scope(scope)
        sp = new_service_principal(name)
        secret = None
        if certificate is None:
            secret = new_secret()
            sp = sp.model_copy(update={"secret_hashes": (hash_secret(secret),)})
        else:
            sp = sp.model_copy(update={"certificates": {certificate[0]: certificate[1]}})
        self._save(sp)
        for role_name, scope in roles:
            self.create_assignment(sp.object_id, role_name, scope)
        return sp, secret

    def declare(
        self, *, kind: str, name: str, secret: str, app_id: str | None,
        roles: Sequence[tuple[str, str]],
    ) -> Principal:  # fmt: skip
        """A principal a lab file declares (`principals:`): made if missing, its secret made the
        declared one, its declared role assignments made if missing. Nothing else is removed:
        what the CLI added stays."""
        found = self.app(app_id) if app_id else self.user(name)
        if found is None and kind == "User":
            found = new_user(name, secret)
        elif found is None:
            found = new_service_principal(name, app_id).model_copy(
                update={"secret_hashes": (hash_secret(secret),)})
        elif not found.has_secret(secret):
            found = found.model_copy(update={"secret_hashes": (hash_secret(secret),)})
        else:
            found = found.model_copy(update={"name": name})
        self._save(found)
        for role_name, scope in roles:
            with contextlib.suppress(Conflict):  # held already: the one rule is create's
                self.create_assignment(found.object_id, role_name, scope)
        return found

    def remove(self, ref: str) -> Principal:
        """A principal and all its role assignments."""
        principal = self.find(ref)
        principals = self.state.read().get(_PRINCIPALS, {})
        principals.pop(principal.object_id, None)
        assignments = {k: v for k, v in self.state.read().get(_ASSIGNMENTS, {}).items()
                       if v["principal_id"] != principal.object_id}  # fmt: skip
        self.state.update(_ASSIGNMENTS, assignments)
        self.state.update(_PRINCIPALS, principals)
        return principal

    # -- role assignments --------------------------------------------------------------------

    def assignments(self, principal_id: str | None = None) -> builtins.list[RoleAssignmentRecord]:
        stored = self.state.read().get(_ASSIGNMENTS, {}).values()
        records = [RoleAssignmentRecord.model_validate(a) for a in stored]
        return sorted((r for r in records if principal_id in (None, r.principal_id)),
                      key=lambda r: (r.scope, r.role, r.name))  # fmt: skip

    def grants(self, object_id: str) -> tuple[RoleAssignment, ...] | None:
        """What a principal may do now (read at every request, so from one read of the
        state); None if it is gone."""
        state = self.state.read()
        if object_id not in state.get(_PRINCIPALS, {}):
            return None
        return tuple(RoleAssignmentRecord.model_validate(a).grant()
                     for a in state.get(_ASSIGNMENTS, {}).values()
                     if a["principal_id"] == object_id)  # fmt: skip

    def create_assignment(self, ref: str, role_name: str, scope: str) -> RoleAssignmentRecord:
        principal = self.find(ref)
        record = new_assignment(principal, role_name, scope)
        for existing in self.assignments(principal.object_id):
            if (existing.role, existing.scope.lower()) == (record.role, record.scope.lower()):
                raise RoleAssignmentExists("The role assignment already exists.",
                                           target=existing.name)  # fmt: skip
        assignments = self.state.read().get(_ASSIGNMENTS, {})
        assignments[record.name] = record.model_dump(mode="json")
        self.state.update(_ASSIGNMENTS, assignments)
        return record

    def delete_assignments(
        self, *, name: str | None = None, ref: str | None = None, role_name: str | None = None,
        scope: str | None = None,
    ) -> builtins.list[RoleAssignmentRecord]:  # fmt: skip
        """Delete by assignment name, or every assignment matching principal/role/scope."""
        if name is None and ref is None and role_name is None:
            raise InvalidInput("say which assignment: its name, or an assignee and/or role",
                               target="assignment")  # fmt: skip
        principal_id = self.find(ref).object_id if ref else None
        wanted_role = role(role_name).name if role_name else None
        wanted_scope = normalise_scope(scope).lower() if scope else None
        gone = [r for r in self.assignments()
                if (name is None or r.name == name)
                and principal_id in (None, r.principal_id)
                and wanted_role in (None, r.role)
                and wanted_scope in (None, r.scope.lower())]  # fmt: skip
        if not gone:
            raise RoleAssignmentNotFound("no role assignment matches",
                                         target=name or ref or role_name)  # fmt: skip
        assignments = self.state.read().get(_ASSIGNMENTS, {})
        for r in gone:
            assignments.pop(r.name, None)
        self.state.update(_ASSIGNMENTS, assignments)
        return gone


# -- device-code sign-ins ----------------------------------------------------------------------

DEVICE_CODE_LIFETIME_S = 900
#: Letters for user codes: no look-alikes (0/O, 1/I/L).
_CODE_LETTERS = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"


@dataclass
class DeviceSignIn:
    device_code: str
    user_code: str
    client_id: str
    expires_at: float
    principal_id: str | None = None

    @property
    def state(self) -> str:
        if time.time() >= self.expires_at:
            return "expired"
        return "approved" if self.principal_id else "pending"


class DeviceSignIns:
    """Device-code flows in progress (RFC 8628): a device polls with its device code while a
    user signs in on the portal's device page and enters the user code. Kept in memory: a
    flow lives 15 minutes, and a restarted daemon's pending ones simply expire."""

    def __init__(self) -> None:
        self._flows: dict[str, DeviceSignIn] = {}
        self._lock = threading.Lock()

    def start(self, client_id: str) -> DeviceSignIn:
        with self._lock:
            now = time.time()
            self._flows = {k: f for k, f in self._flows.items() if f.expires_at > now - 60}
            code = "".join(secrets.choice(_CODE_LETTERS) for _ in range(9))
            flow = DeviceSignIn(secrets.token_urlsafe(32), code, client_id,
                                now + DEVICE_CODE_LIFETIME_S)  # fmt: skip
            self._flows[flow.device_code] = flow
            return flow

    def poll(self, device_code: str) -> DeviceSignIn:
        with self._lock:
            flow = self._flows.get(device_code)
        if flow is None:
            return DeviceSignIn(device_code, "", "", 0.0)  # unknown: as expired
        return flow

    def approve(self, user_code: str, principal_id: str) -> DeviceSignIn:
        wanted = user_code.strip().upper().replace("-", "")
        with self._lock:
            for flow in self._flows.values():
                if flow.user_code == wanted and flow.state == "pending":
                    flow.principal_id = principal_id
                    return flow
        raise CodeExpired(f"no sign-in waits for the code '{user_code}' (mistyped, or more "
                          f"than {DEVICE_CODE_LIFETIME_S // 60} minutes old?)",
                          target="code")  # fmt: skip
