"""The Azure-compatible API application (served over HTTPS by `lab serve`)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import APIRoute

from lab import __version__
from lab.api.azure import (
    authority,
    authorization,
    compute,
    gateway,
    graph,
    metadata,
    operations,
    resources,
    serialconsole,
    storage,
    vm_agent,
    vm_write,
    vmss,
)
from lab.api.errors import install_error_handlers
from lab.api.portal import classes as portal_classes
from lab.api.portal import device as portal_device
from lab.api.portal import me as portal_me
from lab.api.portal import password as portal_password
from lab.api.portal import scenarios as portal_scenarios
from lab.api.portal import static as portal_static
from lab.api.security.signing import KeySet
from lab.api.security.tokens import TokenVerifier
from lab.services.lab import Lab


def _operation_id(route: APIRoute) -> str:
    # Routes registered once per path spelling share a function name; the path keeps ids unique.
    return f"{route.name}_{'_'.join(sorted(route.methods or ()))}_{route.path_format}"


def create_azure_app(lab: Lab, token_key: bytes, storage_secret: bytes) -> FastAPI:
    app = FastAPI(
        title="Serial Console Lab: Azure-compatible API",
        version=__version__,
        generate_unique_id_function=_operation_id,
        # The lab serves its own OpenAPI description; no interactive docs pages.
        docs_url=None,
        redoc_url=None,
    )
    app.state.lab = lab
    app.state.token_key = token_key
    app.state.authority_keys = KeySet(lab.settings.tls_dir / "token-keys")
    app.state.verifier = TokenVerifier(token_key, app.state.authority_keys, lab.identity.grants)
    app.state.storage_secret = storage_secret
    app.state.operations = {}
    install_error_handlers(app, exit_code=False)
    routers = (metadata.router, authority.router, authorization.router, graph.router,
               # Before compute's `{name}/{action}` POST, which would take `runCommand`.
               vm_agent.router, compute.router,
               vm_write.router, vmss.router, operations.router, storage.router,
               serialconsole.router, gateway.router, resources.router,
               # The web portal shares the origin, so its page reaches the API and the gateway
               # without CORS; its scenario routes come before its catch-all file route.
               portal_device.router, portal_me.router, portal_scenarios.router,
               portal_classes.router, portal_password.router,
               portal_static.router)  # fmt: skip
    for router in routers:
        app.include_router(router)
    # Last: the blob endpoint's `/{account}/{container}/{blob}` would shadow ARM paths.
    app.include_router(storage.blob_router)
    return app
