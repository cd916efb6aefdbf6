"""Microsoft.Storage (minimal): storageAccounts GET/PUT/list, and the blob endpoint that
serves boot-diagnostics blobs path-style (`https://<host>/<account>/<container>/<blob>`, as
Azurite does) to SAS-signed reads, with `Range`/`x-ms-range`, so `azure-storage-blob` works.

Blob errors are Azure Storage's, not ARM's: an XML `<Error>` body and `x-ms-error-code`.
"""

from __future__ import annotations

import re
from email.utils import formatdate
from typing import Any
from xml.sax.saxutils import escape

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.convertors import Convertor, register_url_convertor

from lab.api.azure.common import (
    ApiVersion,
    Caller,
    arm_paths,
    blob_endpoint,
    lab_of,
    require_action,
)
from lab.api.azure.errors import (
    AuthorizationFailure,
    ConditionNotMet,
    InvalidValuesForRequestParameters,
    SharedKeyRejected,
    UnsatisfiableRange,
)
from lab.api.security import sas, shared_key
from lab.domain.errors import (
    BlobNotFound,
    KeyBasedAuthenticationNotPermitted,
    LabError,
)
from lab.domain.names import validate_blob_name, validate_storage_account_name
from lab.domain.power import PowerState
from lab.domain.resource_ids import STORAGE_ACCOUNTS, storage_account_id
from lab.domain.storage_account import StorageAccount
from lab.domain.vm import VmView
from lab.storage.blobs import BlobRange

router = APIRouter()
blob_router = APIRouter()
_TYPE = STORAGE_ACCOUNTS


def account_resource(request: Request, account: StorageAccount) -> dict[str, Any]:
    return {
        "id": account.resource_id,
        "name": account.name,
        "type": _TYPE,
        "location": account.location,
        "tags": account.tags,
        "kind": "StorageV2",
        "sku": {"name": "Standard_LRS", "tier": "Standard"},
        "properties": {
            "provisioningState": "Succeeded",
            "allowSharedKeyAccess": account.allow_shared_key_access,
            "networkAcls": {"defaultAction": account.default_action, "bypass": "AzureServices",
                            "ipRules": [], "virtualNetworkRules": []},
            # Where the lab serves the account's blobs: a prefix of every blob URI it hands out
            # (the instance view's, retrieveBootDiagnosticsData's), which is how the Azure CLI
            # finds the account of a boot log.
            "primaryEndpoints": {"blob": blob_endpoint(request, account.name)},
            "supportsHttpsTrafficOnly": True,
            "minimumTlsVersion": "TLS1_2",
        },
    }  # fmt: skip


class _NetworkAcls(BaseModel):
    model_config = ConfigDict(extra="allow")
    defaultAction: str = Field(default="Allow", pattern="^(Allow|Deny)$")


class _AccountProperties(BaseModel):
    model_config = ConfigDict(extra="allow")
    allowSharedKeyAccess: bool | None = None
    networkAcls: _NetworkAcls | None = None
    #: The lab file calls it networkRuleSet; both are accepted.
    networkRuleSet: _NetworkAcls | None = None


class AccountBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    location: str = Field(pattern=r"^[a-z0-9]+$", description="Azure region, e.g. westeurope")
    tags: dict[str, str] = {}
    properties: _AccountProperties = _AccountProperties()


def _account_in(
    request: Request, subscription: str, group: str | None, name: str
) -> StorageAccount:
    return lab_of(request).lookup.storage_account_at(subscription, group, name)


@router.get(f"/subscriptions/{{subscription}}/providers/{_TYPE}")
def list_accounts(
    request: Request, subscription: str, _v: ApiVersion, principal: Caller
) -> dict[str, Any]:
    accounts = lab_of(request).storage_accounts.list(subscription)
    visible = [a for a in accounts if principal.may(f"{_TYPE}/read", a.resource_id)]
    return {"value": [account_resource(request, a) for a in visible]}


for _path in arm_paths(f"/providers/{_TYPE}"):

    @router.get(_path)
    def list_group_accounts(
        request: Request, subscription: str, group: str, _v: ApiVersion, principal: Caller
    ) -> dict[str, Any]:
        accounts = lab_of(request).storage_accounts.list(subscription, group)
        visible = [a for a in accounts if principal.may(f"{_TYPE}/read", a.resource_id)]
        return {"value": [account_resource(request, a) for a in visible]}

    @router.get(_path + "/{name}")
    def get_account(
        request: Request, subscription: str, group: str, name: str, _v: ApiVersion,
        principal: Caller,
    ) -> dict[str, Any]:  # fmt: skip
        require_action(principal, f"{_TYPE}/read", storage_account_id(subscription, group, name))
        return account_resource(request, _account_in(request, subscription, group, name))

    @router.put(_path + "/{name}")
    def put_account(
        request: Request, subscription: str, group: str, name: str, body: AccountBody,
        _v: ApiVersion, principal: Caller, response: Response,
    ) -> dict[str, Any]:  # fmt: skip
        """Create or update synchronously (ARM allows a 200/201 answer to a PUT)."""
        require_action(principal, f"{_TYPE}/write", storage_account_id(subscription, group, name))
        validate_storage_account_name(name, target=name)
        store = lab_of(request).storage_accounts
        current = store.get(name)
        props = body.properties
        acls = props.networkAcls or props.networkRuleSet
        account = StorageAccount(
            subscription_id=subscription, resource_group=group, name=name.lower(),
            location=body.location, tags=body.tags,
            allow_shared_key_access=(props.allowSharedKeyAccess
                                     if props.allowSharedKeyAccess is not None
                                     else current.allow_shared_key_access if current else True),
            default_action=(acls.defaultAction if acls
                            else current.default_action if current else "Allow"),
            key_generations=current.key_generations if current else {},
        )  # fmt: skip
        store.put(account)
        response.status_code = 200 if current else 201
        return account_resource(request, account)


    @router.post(_path + "/{name}/listKeys")
    def list_keys(
        request: Request, subscription: str, group: str, name: str, _v: ApiVersion,
        principal: Caller,
    ) -> dict[str, Any]:  # fmt: skip
        """The two access keys (`$expand=kerb` is accepted; the lab has no Kerberos keys)."""
        rid = storage_account_id(subscription, group, name)
        require_action(principal, f"{_TYPE}/listKeys/action", rid)
        return _keys_body(request, _account_in(request, subscription, group, name))

    @router.post(_path + "/{name}/regenerateKey")
    def regenerate_key(
        request: Request, subscription: str, group: str, name: str, body: RegenerateBody,
        _v: ApiVersion, principal: Caller,
    ) -> dict[str, Any]:  # fmt: skip
        rid = storage_account_id(subscription, group, name)
        require_action(principal, f"{_TYPE}/regenerateKey/action", rid)
        account = _account_in(request, subscription, group, name)
        which = body.keyName.lower()
        if which not in shared_key.KEY_NAMES:
            raise InvalidValuesForRequestParameters(
                f"keyName must be key1 or key2, not {body.keyName!r}", target="keyName"
            )
        generations = {**account.key_generations, which: account.key_generations.get(which, 0) + 1}
        account = lab_of(request).storage_accounts.put(
            account.model_copy(update={"key_generations": generations}))
        return _keys_body(request, account)


class RegenerateBody(BaseModel):
    keyName: str


def account_keys(request: Request, account: StorageAccount) -> list[str]:
    secret: bytes = request.app.state.storage_secret
    return [shared_key.account_key(secret, account.name, k, account.key_generations.get(k, 0))
            for k in shared_key.KEY_NAMES]  # fmt: skip


def _keys_body(request: Request, account: StorageAccount) -> dict[str, Any]:
    return {"keys": [{"keyName": k, "value": v, "permissions": "FULL"}
                     for k, v in zip(shared_key.KEY_NAMES, account_keys(request, account),
                                     strict=True)]}  # fmt: skip


# -- the blob endpoint ----------------------------------------------------------------------------


def storage_error_response(exc: LabError, request_id: str) -> Response:
    body = (
        '<?xml version="1.0" encoding="utf-8"?><Error>'
        f"<Code>{escape(exc.code)}</Code><Message>{escape(exc.message)}\nRequestId:{request_id}"
        f"\nTime:{formatdate(usegmt=True)}</Message></Error>"
    )
    headers = {"x-ms-error-code": exc.code, "x-ms-request-id": request_id}
    return Response(body, status_code=exc.status, media_type="application/xml", headers=headers)


async def _blob_owner(
    request: Request, account: str, container: str, blob: str
) -> tuple[VmView, str]:
    """The VM a boot-diagnostics blob belongs to, and which blob it is (log or screenshot)."""
    lab = lab_of(request)
    for view in await lab.vms.machines_now():
        if not view.model.boot_diagnostics.enabled:
            continue
        b = lab.ctx.boot_blobs(view.identity, view.model)
        if (b.account, b.container) == (account, container) and blob in (
            b.serial_log,
            b.screenshot,
        ):
            return view, ("log" if blob == b.serial_log else "screenshot")
    raise BlobNotFound(_NO_BLOB)


def _authorize(request: Request, account_name: str, container: str, blob: str) -> None:
    """A blob read's authorization: Shared Key (the account's keys, as `az vm boot-diagnostics
    get-boot-log` signs with what `listKeys` gave it) or a SAS (what the instance view and
    `retrieveBootDiagnosticsData` hand out). The lab signs its SAS with its own secret, not
    the account keys, as a user-delegation SAS is: so `allowSharedKeyAccess: false` refuses
    Shared Key alone."""
    account = lab_of(request).storage_accounts.get(account_name)
    authorization = request.headers.get("authorization")
    if authorization is None:
        sas.verify(request.app.state.storage_secret, account_name, container, blob,
                   dict(request.query_params))  # fmt: skip
    elif account is None:
        # The managed account has no keys anyone was given.
        raise SharedKeyRejected("Server failed to authenticate the request: the managed "
                                "boot-diagnostics account takes a SAS only.")  # fmt: skip
    elif not account.allow_shared_key_access:
        raise KeyBasedAuthenticationNotPermitted(
            "Key based authentication is not permitted on this storage account."
        )
    else:
        raw_path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
        shared_key.verify(authorization, account_keys(request, account), request.method,
                          request.headers, account_name, raw_path.split("?", 1)[0],
                          request.url.query)  # fmt: skip
    if account is not None and account.firewall_on:
        raise AuthorizationFailure("This request is not authorized to perform this operation.")


_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
_RANGE_PAST_END = "The range specified is invalid for the current size of the resource."
_NO_BLOB = "The specified blob does not exist."


def _requested_range(request: Request) -> tuple[int, int | None] | None:
    """(first, last or None) of `x-ms-range` (preferred, as Azure does) or `Range`."""
    raw = request.headers.get("x-ms-range") or request.headers.get("range")
    if not raw:
        return None
    m = _RANGE.match(raw.strip())
    if not m:
        raise UnsatisfiableRange(f"The range specified is invalid: {raw!r}.")
    first, last = int(m.group(1)), (int(m.group(2)) if m.group(2) else None)
    if last is not None and last < first:
        raise UnsatisfiableRange(f"The range specified is invalid: {raw!r}.")
    return first, last


async def _blob_content(request: Request, view: VmView, kind: str, rng: tuple[int, int | None]
                        | None) -> tuple[BlobRange, str]:  # fmt: skip
    lab = lab_of(request)
    if kind == "log":
        first = rng[0] if rng else 0
        length = (rng[1] - first + 1) if rng and rng[1] is not None else None
        size = lab.boot_diagnostics.serial_log(view, 0, 0).size
        if rng and first >= size:
            raise UnsatisfiableRange(_RANGE_PAST_END)
        return lab.boot_diagnostics.serial_log(view, first, length), "text/plain"
    # The screenshot blob is refreshed on every read of a running VM.
    if view.power_state is PowerState.RUNNING:
        await lab.boot_diagnostics.screenshot(view)
    b = lab.ctx.boot_blobs(view.identity, view.model)
    try:
        data = lab.ctx.blobs.path(b.account, b.container, b.screenshot).read_bytes()
    except FileNotFoundError:
        raise BlobNotFound(_NO_BLOB) from None
    first = rng[0] if rng else 0
    if rng and first >= len(data):
        raise UnsatisfiableRange(_RANGE_PAST_END)
    end = len(data) if not rng or rng[1] is None else min(len(data), rng[1] + 1)
    return BlobRange(data[first:end], first, end, len(data)), "image/bmp"


class _AccountSegment(Convertor[str]):
    """A path's first segment that can be a storage account: 3-24 lowercase letters and digits,
    but not `subscriptions/` or `providers/`, so ARM paths keep ARM's own answers (a JSON 404
    or 405) however many segments they have."""

    regex = r"(?!(?:subscriptions|providers)/)[a-z0-9]{3,24}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class _BlobName(_AccountSegment):
    """The rest of the path, '/' and control characters (a decoded `%0A`) included: whatever
    name is asked for reaches the handler and gets Azure Storage's XML answer, never the
    router's JSON 404."""

    regex = r"[\s\S]+"


register_url_convertor("storage_account", _AccountSegment())
register_url_convertor("blob_name", _BlobName())
_BLOB_PATH = "/{account:storage_account}/{container}/{blob:blob_name}"


@blob_router.head(_BLOB_PATH, include_in_schema=False)
@blob_router.get(_BLOB_PATH)
async def get_blob(request: Request, account: str, container: str, blob: str) -> Response:
    """Read a boot-diagnostics blob with a SAS (`?sv=...&sig=...`) or Shared Key."""
    try:
        # First, and before any lookup: a name that spells a way out of its container (`..`,
        # `%2e%2e` in any case or encoding, a leading '/', NUL, '\\') is a 400 whatever the SAS.
        validate_blob_name(blob)
        _authorize(request, account, container, blob)
        view, kind = await _blob_owner(request, account, container, blob)
        rng = _requested_range(request)
        part, media = await _blob_content(request, view, kind, rng)
    except LabError as exc:
        return storage_error_response(exc, request.state.request_id)
    etag = f'"0x{part.size:X}"'  # the blobs only grow: the size identifies a version
    if_match = request.headers.get("if-match")
    if if_match and if_match not in ("*", etag):
        err = ConditionNotMet(
            "The condition specified using HTTP conditional header(s) is not met."
        )
        return storage_error_response(err, request.state.request_id)
    headers = {
        "ETag": etag, "Last-Modified": formatdate(usegmt=True), "Accept-Ranges": "bytes",
        "x-ms-blob-type": "BlockBlob", "x-ms-version": sas.SAS_VERSION,
        "x-ms-creation-time": formatdate(usegmt=True), "x-ms-lease-state": "available",
        "x-ms-lease-status": "unlocked", "x-ms-server-encrypted": "true",
    }  # fmt: skip
    status = 200
    if rng is not None:
        status = 206
        last = part.start + len(part.data) - 1
        headers["Content-Range"] = f"bytes {part.start}-{last}/{part.size}"
    body = b"" if request.method == "HEAD" else part.data
    headers["Content-Length"] = str(len(part.data))
    return Response(body, status_code=status, media_type=media, headers=headers)
