"""The Azure-compatible API's own OpenAPI description, fuzzed by schemathesis: whatever a
client sends to a published route, the answer is never a 5xx, and every error carries Azure's
body and an `x-ms-request-id`."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from lab.api.azure.app import create_azure_app
from lab.api.security.tokens import issue
from lab.domain.storage_account import StorageAccount
from lab.hypervisor.fake import FakeHypervisor
from lab.services.lab import Lab
from lab.settings import Settings
from tests.unit.fakelab import SHUTDOWN_TIMEOUT, SUBSCRIPTION, make_image

KEY = b"t" * 32


def _app(tmp: Path) -> object:
    cache = tmp / "images"
    cache.mkdir()
    make_image(cache, "tiny", disk=True)
    lab = Lab(Settings(data_dir=tmp / "data", image_cache=cache, images_dir=tmp / "recipes",
                       libvirt_uri="test:///default", accel="qemu",
                       shutdown_timeout=SHUTDOWN_TIMEOUT), FakeHypervisor())  # fmt: skip
    lab.storage_accounts.put(StorageAccount(subscription_id=SUBSCRIPTION, resource_group="rg1",
                                            name="fuzzdiag"))  # fmt: skip
    return create_azure_app(lab, KEY, b"s" * 32)


def _schema() -> schemathesis.schemas.BaseSchema:
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="lab-openapi-"))
    return schemathesis.openapi.from_asgi("/openapi.json", _app(tmp))


schema = _schema()
# A day: the suite may run for long before this module does (tokens are made at import).
TOKEN = issue(KEY, user="fuzzer", roles=[("Owner", "/")], expires_in=86400)


def test_openapi_is_published_and_names_the_azure_routes() -> None:
    paths = schema.raw_schema["paths"]
    assert any(p.endswith("/retrieveBootDiagnosticsData") for p in paths)
    assert any("Microsoft.SerialConsole/serialPorts" in p for p in paths)
    assert any("consoleServices" in p for p in paths)


@schema.parametrize()
@settings(max_examples=15, deadline=None,
          suppress_health_check=list(HealthCheck))  # fmt: skip
def test_no_route_answers_5xx(case: schemathesis.Case) -> None:
    response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code < 500, (case.method, case.formatted_path, response.text[:300])
    assert response.headers.get("x-ms-request-id")
    if response.status_code >= 400 and "json" in response.headers.get("content-type", ""):
        body = response.json()
        assert "error" in body or body.get("code") == "SubscriptionNotFound", body


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
