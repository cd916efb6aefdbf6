"""The error codes only the Azure-compatible API speaks, one class per code (as moto's
`exceptions.py`): ARM's authentication and authorization, its query and path errors, Azure
Storage's data plane (rendered as XML by the blob endpoint), the portal. The codes the domain,
the services and the CLI raise too are in `lab/domain/errors.py`; `lab/api/errors.py` renders
both. No HTTP here: a class names a code and its status, nothing more.
"""

from __future__ import annotations

from lab.domain.errors import InvalidInput, InvalidRange, LabError, NotFound

# -- ARM: who is asking, and may they -------------------------------------------------------------


class AuthenticationFailed(LabError):
    """ARM's 401; with this code when there is no bearer token at all."""

    code = "AuthenticationFailed"
    status = 401


class InvalidAuthenticationToken(AuthenticationFailed):
    code = "InvalidAuthenticationToken"


class ExpiredAuthenticationToken(AuthenticationFailed):
    code = "ExpiredAuthenticationToken"


class AuthorizationFailed(LabError):
    """No role assignment of the caller grants the action on the scope."""

    code = "AuthorizationFailed"
    status = 403


class OriginNotAllowed(LabError):
    """A websocket handshake from another web page's `Origin`."""

    code = "OriginNotAllowed"
    status = 403


# -- ARM: the request as written ------------------------------------------------------------------


class MissingApiVersionParameter(InvalidInput):
    code = "MissingApiVersionParameter"


class InvalidValuesForRequestParameters(InvalidInput):
    code = "InvalidValuesForRequestParameters"


class UnsupportedQuery(InvalidInput):
    code = "UnsupportedQuery"


class SubscriptionNotFound(NotFound):
    code = "SubscriptionNotFound"


class RoleDefinitionNotFound(NotFound):
    """The ARM read of a role definition id that does not exist (a 404; an unknown role *name*
    in a request body is the domain's 400 `RoleDefinitionDoesNotExist`)."""

    code = "RoleDefinitionDoesNotExist"


class RequestResourceNotFound(NotFound):
    """Microsoft Graph's 404."""

    code = "Request_ResourceNotFound"


# -- refused before any route ran (Starlette's HTTPException) -------------------------------------


class PathNotFound(NotFound):
    code = "NotFound"


class MethodNotAllowed(LabError):
    code = "MethodNotAllowed"
    status = 405


class BadRequest(LabError):
    """Any other status the router refused with (it says which)."""

    code = "BadRequest"
    status = 400

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status  # type: ignore[misc]


# -- Azure Storage's data plane (the blob endpoint) -----------------------------------------------


class StorageError(LabError):
    """An Azure Storage data-plane error (the blob endpoint renders any LabError as Storage's
    XML; these are the codes only that endpoint answers with)."""

    code = "InvalidOperation"
    status = 400


class StorageAuthenticationFailed(StorageError):
    """Storage's 403 for a credential it does not accept."""

    code = "AuthenticationFailed"
    status = 403


class SasRejected(StorageAuthenticationFailed):
    """A shared-access signature that is missing, tampered with, expired or not yet valid."""


class AuthorizationPermissionMismatch(SasRejected):
    """A valid SAS that does not grant the permission (read)."""

    code = "AuthorizationPermissionMismatch"


class SharedKeyRejected(StorageAuthenticationFailed):
    """A Shared Key signature that is malformed, for another account, or wrong."""


class AuthorizationFailure(StorageError):
    """The account's firewall denies the request."""

    code = "AuthorizationFailure"
    status = 403


class ConditionNotMet(StorageError):
    code = "ConditionNotMet"
    status = 412


class UnsatisfiableRange(InvalidRange):
    """The blob endpoint's answer to a bad or out-of-range `Range` (Storage's 416)."""

    status = 416


# -- the portal -----------------------------------------------------------------------------------


class PortalNotInstalled(LabError):
    code = "PortalNotInstalled"
    status = 503
