"""The lab's sign-in authority, on the API's own HTTPS origin, in the shape of an AD FS
authority (what Azure Stack Hub uses): `https://<lab>/adfs`.

An AD FS-style authority is one MSAL (and so the Azure CLI and `azure-identity`) uses without
asking Microsoft's instance-discovery service, which an offline lab cannot reach: MSAL reads
`/adfs/.well-known/openid-configuration`, then posts to the token endpoint it names.

Grants: `client_credentials` with a client secret or a certificate-signed `client_assertion`
(`az login --service-principal` with `-p` or `--certificate`), `password` (`az login -u -p`),
the device-code flow (`az login --use-device-code`, approved on the portal's `/device` page),
and `refresh_token`. Errors come in OAuth's shape with AADSTS codes.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from lab.api.azure.common import lab_of
from lab.api.security.signing import KeySet
from lab.api.security.tokens import AUDIENCES, issue_authority_token
from lab.domain.identity import TENANT_ID, Principal
from lab.domain.resource_ids import same

router = APIRouter(tags=["authority"])

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
#: What a refresh token is for (its `aud`): never accepted as an access token.
REFRESH_AUDIENCE = "urn:serial-console-lab:refresh"
REFRESH_LIFETIME_S = 24 * 3600


class OAuthError(Exception):
    """An OAuth 2.0 error response (RFC 6749 5.2) with Entra ID's AADSTS code."""

    def __init__(self, error: str, aadsts: int, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.aadsts, self.description, self.status = error, aadsts, description, status

    def response(self) -> JSONResponse:
        trace = str(uuid.uuid4())
        return JSONResponse(
            {"error": self.error, "error_description": f"AADSTS{self.aadsts}: {self.description}"
             f"\r\nTrace ID: {trace}\r\nTimestamp: {time.strftime('%Y-%m-%d %H:%M:%SZ')}",
             "error_codes": [self.aadsts], "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ"),
             "trace_id": trace, "correlation_id": str(uuid.uuid4())},
            status_code=self.status, headers={"Cache-Control": "no-store"},
        )  # fmt: skip


def authority_url(request: Request) -> str:
    """`https://<the host the client used>/adfs`: the issuer, whichever name reached us."""
    return f"https://{request.headers.get('host', 'localhost')}/adfs"


def _keys(request: Request) -> KeySet:
    keys: KeySet = request.app.state.authority_keys
    return keys


@router.get("/adfs/.well-known/openid-configuration")
async def openid_configuration(request: Request) -> JSONResponse:
    base = authority_url(request)
    return JSONResponse({
        "issuer": base, "access_token_issuer": base,
        "authorization_endpoint": f"{base}/oauth2/authorize",
        "token_endpoint": f"{base}/oauth2/token",
        "device_authorization_endpoint": f"{base}/oauth2/devicecode",
        "jwks_uri": f"{base}/discovery/keys",
        "response_types_supported": ["code", "id_token", "code id_token", "token"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "grant_types_supported": ["client_credentials", "password", "refresh_token",
                                  DEVICE_CODE_GRANT],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
        "scopes_supported": ["openid", "profile", "offline_access"],
        "claims_supported": ["aud", "iss", "iat", "exp", "oid", "sub", "tid", "upn", "name"],
    })  # fmt: skip


@router.get("/adfs/discovery/keys")
async def jwks(request: Request) -> JSONResponse:
    return JSONResponse({"keys": [k.jwk() for k in _keys(request).published()]})


async def _form(request: Request) -> dict[str, str]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", 900144, "The request body must be "
                         "application/x-www-form-urlencoded.")  # fmt: skip
    body = await request.body()
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", 900144, "The request body is not a form.") from None
    return {k: v[0] for k, v in fields.items()}


def _need(form: dict[str, str], name: str) -> str:
    value = form.get(name, "").strip()
    if not value:
        raise OAuthError(
            "invalid_request",
            900144,
            f"The request body must contain the following parameter: '{name}'.",
        )
    return value


def graph_resource(request: Request) -> str:
    """The lab's Microsoft Graph (`lab/api/azure/graph.py`): its resource id is its URL."""
    return f"https://{request.headers.get('host', 'localhost')}/graph/"


def _audience(request: Request, scope: str) -> str:
    """The resource of a `<resource>/.default` scope (`https://management.azure.com//.default`
    as the CLI writes it, or `.../.default` as the SDKs do)."""
    for item in scope.split():
        if item.lower().endswith("/.default"):
            resource = item[: -len(".default")]
            resource = resource[:-1] if resource.endswith("//") else resource
            for known in (*AUDIENCES, graph_resource(request)):
                if same(resource, known):
                    return known
            raise OAuthError("invalid_resource", 500011,
                             f"The resource principal named {resource} was not found in the "
                             f"tenant. This lab serves {', '.join(AUDIENCES)}.")  # fmt: skip
    raise OAuthError("invalid_scope", 70011, f"The provided value for the input parameter "
                     f"'scope' is not valid: {scope!r}. Ask for '<resource>/.default', e.g. "
                     f"{AUDIENCES[0]}.default.")  # fmt: skip


def _requested_audience(request: Request, form: dict[str, str]) -> str:
    """What the token is for: `scope` (v2 style), `resource` (v1, AD FS style), or, when a
    device-code or refresh request names neither (MSAL's AD FS requests may not), the
    management API."""
    if form.get("scope", "").strip():
        return _audience(request, form["scope"])
    if form.get("resource", "").strip():
        return _audience(request, form["resource"].strip().rstrip("/") + "//.default")
    return AUDIENCES[0]


def _app(request: Request, client_id: str) -> Principal:
    app = lab_of(request).identity.app(client_id)
    if app is None:
        raise OAuthError("unauthorized_client", 700016,
                         f"Application with identifier '{client_id}' was not found in the "
                         "directory of the lab.", status=400)  # fmt: skip
    return app


def _check_assertion(request: Request, app: Principal, assertion: str) -> None:
    """A client assertion (RFC 7523) signed with one of the app's certificates."""
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.InvalidTokenError as exc:
        raise OAuthError("invalid_client", 700027, f"Client assertion is not a JWT: {exc}.") \
            from None  # fmt: skip
    pem = _certificate_for(app, header)
    if pem is None:
        raise OAuthError("invalid_client", 700027, "Client assertion contains an invalid "
                         "signature. [Reason - The key was not found., Thumbprint of key used "
                         f"by client: '{header.get('x5t') or header.get('x5t#S256')}']",
                         )  # fmt: skip
    cert = x509.load_pem_x509_certificate(pem.encode())
    token_endpoint = f"{authority_url(request)}/oauth2/token"
    try:
        claims = jwt.decode(assertion, cert.public_key(),  # type: ignore[arg-type]
                            algorithms=["RS256", "PS256"], audience=token_endpoint,
                            options={"require": ["exp", "iss", "sub", "aud"]})  # fmt: skip
    except jwt.InvalidTokenError as exc:
        raise OAuthError("invalid_client", 700027, f"Client assertion failed signature or claim "
                         f"validation: {exc}.") from None  # fmt: skip
    if claims["iss"] != app.app_id or claims["sub"] != app.app_id:
        raise OAuthError("invalid_client", 700021, "Client assertion's iss and sub must be the "
                         "application's client id.")  # fmt: skip


def _certificate_for(app: Principal, header: dict[str, Any]) -> str | None:
    # MSAL pads its base64url thumbprints ('=' at the end); the lab keeps them unpadded.
    sha1 = str(header.get("x5t") or "").rstrip("=")
    if sha1 in app.certificates:
        return app.certificates[sha1]
    wanted = str(header.get("x5t#S256") or "").rstrip("=")
    for pem in app.certificates.values():
        cert = x509.load_pem_x509_certificate(pem.encode())
        if wanted and b64url(cert.fingerprint(hashes.SHA256())) == wanted:
            return pem
    return None


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _client_credentials(request: Request, form: dict[str, str]) -> Principal:
    app = _app(request, _need(form, "client_id"))
    if form.get("client_assertion"):
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise OAuthError(
                "invalid_request", 900144, f"client_assertion_type must be '{ASSERTION_TYPE}'."
            )
        _check_assertion(request, app, form["client_assertion"])
        return app
    secret = form.get("client_secret", "")
    if not secret:
        raise OAuthError("invalid_client", 7000218, "The request body must contain the "
                         "following parameter: 'client_assertion' or 'client_secret'.")  # fmt: skip
    if not lab_of(request).identity.secret_ok(app, secret):
        raise OAuthError("invalid_client", 7000215, "Invalid client secret provided. Ensure "
                         f"the secret being sent in the request is the client secret value, not "
                         f"the client secret ID, for a secret added to app '{app.app_id}'.",
                         status=401)  # fmt: skip
    return app


def _password(request: Request, form: dict[str, str]) -> Principal:
    username = _need(form, "username")
    user = lab_of(request).identity.user(username)
    if user is None or not lab_of(request).identity.secret_ok(user, form.get("password", "")):
        raise OAuthError("invalid_grant", 50126, "Error validating credentials due to invalid "
                         "username or password.")  # fmt: skip
    if user.must_change_password:
        # Entra ID's answer for a temporary password; the portal then asks for a new one.
        raise OAuthError("invalid_grant", 50055, "The password is expired: it was made for "
                         "you to sign in once and choose your own. Sign in to the lab's "
                         "portal to choose one.")  # fmt: skip
    return user


def _refresh(request: Request, form: dict[str, str]) -> Principal:
    token = _need(form, "refresh_token")
    try:
        claims = _keys(request).decode(token, REFRESH_AUDIENCE)
    except jwt.ExpiredSignatureError:
        raise OAuthError("invalid_grant", 700082, "The refresh token has expired due to "
                         "inactivity.") from None  # fmt: skip
    except jwt.InvalidTokenError as exc:
        raise OAuthError("invalid_grant", 9002313, f"Invalid refresh token: {exc}.") from None
    principal = lab_of(request).identity.get(str(claims.get("oid")))
    if principal is None:
        raise OAuthError("invalid_grant", 50034, "The user account does not exist in the lab.")
    return principal


def _device_code(request: Request, form: dict[str, str]) -> Principal:
    code = _need(form, "device_code")
    flow = lab_of(request).device_sign_ins.poll(code)
    if flow.state == "expired":
        raise OAuthError("expired_token", 70020, "The provided authorization code or refresh "
                         "token has expired. Send a new interactive authorization request.",
                         )  # fmt: skip
    if flow.state == "pending" or flow.principal_id is None:
        raise OAuthError("authorization_pending", 70016, "OAuth 2.0 device flow error. "
                         "Authorization is pending. Continue polling.")  # fmt: skip
    principal = lab_of(request).identity.get(flow.principal_id)
    if principal is None:
        raise OAuthError("invalid_grant", 50034, "The user account does not exist in the lab.")
    return principal


_GRANTS = {
    "client_credentials": _client_credentials,
    "password": _password,
    "refresh_token": _refresh,
    DEVICE_CODE_GRANT: _device_code,
    "device_code": _device_code,  # AD FS 2019's own spelling
}


def _form_schema(*fields: str) -> dict[str, Any]:
    """The form a route reads by hand, in its OpenAPI description (so the fuzz test sends it)."""
    props = {f: {"type": "string"} for f in fields}
    return {"requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {
        "schema": {"type": "object", "properties": props}}}}}  # fmt: skip


@router.post("/adfs/oauth2/token", openapi_extra=_form_schema(
    "grant_type", "client_id", "client_secret", "client_assertion_type", "client_assertion",
    "scope", "username", "password", "refresh_token", "device_code"))  # fmt: skip
async def token(request: Request) -> JSONResponse:
    try:
        form = await _form(request)
        grant = _need(form, "grant_type")
        if grant not in _GRANTS:
            raise OAuthError("unsupported_grant_type", 70003, f"The app requested an "
                             f"unsupported grant type '{grant}'.")  # fmt: skip
        audience = _requested_audience(request, form)
        # Secrets are checked with scrypt (about 50 ms): off the event loop.
        try:
            principal = await asyncio.to_thread(_GRANTS[grant], request, form)
        except OAuthError:
            _audit_sign_in(request, grant, form, None)
            raise
        _audit_sign_in(request, grant, form, principal)
        return _token_response(request, principal, audience, form, user_flow=grant !=
                               "client_credentials")  # fmt: skip
    except OAuthError as exc:
        return exc.response()


def _audit_sign_in(request: Request, grant: str, form: dict[str, str],
                   principal: Principal | None) -> None:  # fmt: skip
    """Sign-ins go to the audit log, refused ones too (a refresh is not a sign-in). Never the
    secret: the grant, the client, and who it was (or claimed to be)."""
    if grant == "refresh_token":
        return
    who = principal.name if principal else form.get("username") or form.get("client_id", "")
    lab_of(request).consoles.audit.record("sign-in" if principal else "sign-in-refused",
                                          user=who, grant=grant,
                                          client=form.get("client_id", ""))  # fmt: skip


def _token_response(request: Request, principal: Principal, audience: str,
                    form: dict[str, str], *, user_flow: bool) -> JSONResponse:  # fmt: skip
    keys = _keys(request)
    lifetime = int(lab_of(request).settings.token_lifetime_minutes * 60)
    issuer = authority_url(request)
    access = issue_authority_token(
        keys, issuer=issuer, audience=audience, object_id=principal.object_id,
        name=principal.name, app_id=principal.app_id, tenant=TENANT_ID, expires_in=lifetime,
    )  # fmt: skip
    body: dict[str, Any] = {"token_type": "Bearer", "access_token": access,
                            "expires_in": lifetime, "ext_expires_in": lifetime,
                            "resource": audience,
                            "scope": f"{audience}user_impersonation"}  # fmt: skip
    if user_flow:
        now = int(time.time())
        body["refresh_token"] = keys.sign(
            {"aud": REFRESH_AUDIENCE, "iss": issuer, "oid": principal.object_id, "iat": now,
             "exp": now + REFRESH_LIFETIME_S, "jti": str(uuid.uuid4())})  # fmt: skip
        body["refresh_token_expires_in"] = REFRESH_LIFETIME_S
        body["id_token"] = keys.sign(
            {"aud": form.get("client_id", ""), "iss": issuer, "iat": now, "nbf": now,
             "exp": now + lifetime, "oid": principal.object_id, "sub": principal.object_id,
             "tid": TENANT_ID, "upn": principal.name, "unique_name": principal.name,
             "preferred_username": principal.name, "name": principal.name,
             "ver": "1.0"})  # fmt: skip
    return JSONResponse(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


@router.post("/adfs/oauth2/devicecode", openapi_extra=_form_schema("client_id", "scope"))
async def device_code(request: Request) -> JSONResponse:
    """Start a device-code sign-in: the user opens the portal's `/device` page."""
    try:
        form = await _form(request)
        client_id = _need(form, "client_id")
        _requested_audience(request, form)
    except OAuthError as exc:
        return exc.response()
    flow = lab_of(request).device_sign_ins.start(client_id)
    page = f"https://{request.headers.get('host', 'localhost')}/device"
    shown = f"{flow.user_code[:3]}-{flow.user_code[3:6]}-{flow.user_code[6:]}"
    return JSONResponse({
        "device_code": flow.device_code, "user_code": shown, "verification_uri": page,
        "verification_url": page, "expires_in": int(flow.expires_at - time.time()),
        # Polled every second: a CLI waiting on a longer default would feel slow.
        "interval": 1,
        "message": f"To sign in, use a web browser to open the page {page} and enter the code "
                   f"{shown} to authenticate.",
    }, headers={"Cache-Control": "no-store"})  # fmt: skip
