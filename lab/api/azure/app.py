"""The Azure-compatible API application (served over HTTPS by `lab serve`)."""

from __future__ import annotations

from fastapi import FastAPI

from lab import __version__
from lab.api.azure import compute, operations
from lab.api.azure.common import install_error_handling
from lab.services.lab import Lab


def create_azure_app(lab: Lab, token_key: bytes) -> FastAPI:
    app = FastAPI(title="Serial Console Lab: Azure-compatible API", version=__version__)
    app.state.lab = lab
    app.state.token_key = token_key
    app.state.operations = {}
    install_error_handling(app)
    app.include_router(compute.router)
    app.include_router(operations.router)
    return app
