"""ARM's cloud metadata (`GET /metadata/endpoints`): what `az cloud register
--endpoint-resource-manager https://127.0.0.1:8443/` reads to learn the lab's sign-in
authority, token audiences and portal. The Azure CLI appends the path to the endpoint as typed,
so a trailing '/' makes it `//metadata/endpoints`: `RequestIdMiddleware` folds the slashes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from lab.api.azure.authority import authority_url, graph_resource
from lab.api.security.tokens import AUDIENCES
from lab.domain.identity import TENANT_ID

router = APIRouter(tags=["metadata"])
CLOUD_NAME = "SerialConsoleLab"


@router.get("/metadata/endpoints")
async def cloud_metadata(request: Request) -> JSONResponse:
    # No api-version check: every version (2015-01-01 to 2022-09-01) gets the same shape.
    origin = f"https://{request.headers.get('host', 'localhost')}"
    return JSONResponse({
        "name": CLOUD_NAME,
        "portal": f"{origin}/",
        "resourceManager": f"{origin}/",
        "microsoftGraphResourceId": graph_resource(request),
        "authentication": {"loginEndpoint": authority_url(request), "audiences": list(AUDIENCES),
                           "tenant": "adfs", "identityProvider": "ADFS",
                           "tenantId": TENANT_ID},
        # Storage is served path-style from the same origin (`primaryEndpoints.blob` of each
        # account says where), so there is no host suffix to name.
        "suffixes": {},
    })  # fmt: skip
