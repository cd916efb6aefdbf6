"""The Azure-compatible API's own OpenAPI description, fuzzed by schemathesis: whatever a
client sends to a published route, the answer is never a 5xx, and every error carries Azure's
body and an `x-ms-request-id`."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

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
#: Examples per operation (stateless) and scenarios (stateful); `bench/api_fuzz.py` runs more.
STATELESS_EXAMPLES = int(os.environ.get("LAB_OPENAPI_EXAMPLES", "15"))
STATEFUL_EXAMPLES = int(os.environ.get("LAB_OPENAPI_SCENARIOS", "25"))


#: What the seeded labs hold, for path parameters (the fuzzer's own values get the rest).
KNOWN = {"subscription": [SUBSCRIPTION], "group": ["rg1"], "name": ["vm1", "web", "fuzzdiag"],
         "instance_id": ["0", "1"], "port": ["0"], "location": ["westeurope"]}  # fmt: skip


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
CALLS: dict[str, int] = {"stateless": 0, "stateful": 0}
#: Answers by kind of run and status class ("stateful 2xx": 40, ...), for the report.
STATUSES: Counter[str] = Counter()
# A day: the suite may run for long before this module does (tokens are made at import).
TOKEN = issue(KEY, user="fuzzer", roles=[("Owner", "/")], expires_in=86400)


def test_openapi_is_published_and_names_the_azure_routes() -> None:
    paths = schema.raw_schema["paths"]
    assert any(p.endswith("/retrieveBootDiagnosticsData") for p in paths)
    assert any("Microsoft.SerialConsole/serialPorts" in p for p in paths)
    assert any("consoleServices" in p for p in paths)


def _header(response: Any, name: str) -> str:
    """A header as text (schemathesis' responses hold each header as a list of values)."""
    value = response.headers.get(name) or response.headers.get(name.title()) or ""
    return ", ".join(value) if isinstance(value, list) else str(value)


def _check_answer(case: schemathesis.Case, response: Any, run: str) -> None:
    CALLS[run] += 1
    STATUSES[f"{run} {response.status_code // 100}xx"] += 1
    where = (case.method, case.formatted_path, response.text[:300])
    assert response.status_code < 500, where
    assert _header(response, "x-ms-request-id"), where
    code = _header(response, "x-ms-error-code")
    if response.status_code >= 400 and "json" in _header(response, "content-type"):
        body = response.json()
        assert isinstance(body, dict) and "error" in body, (where, body)
        if case.path.startswith("/adfs/") and isinstance(body["error"], str):
            # The authority's own answers are in OAuth's shape (the router's 405 is ARM's).
            assert "AADSTS" in body["error_description"], (where, body)
            code = body["error"]
        else:
            assert {"code", "message"} <= body["error"].keys(), (where, body)
            code = body["error"]["code"]
    if os.environ.get("LAB_OPENAPI_REPORT"):
        STATUSES[f"{run} {response.status_code} {code}".rstrip()] += 1


@schema.parametrize()
@settings(max_examples=STATELESS_EXAMPLES, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))  # fmt: skip
def test_no_route_answers_5xx(case: schemathesis.Case) -> None:
    _often_known(case)
    response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
    _check_answer(case, response, "stateless")


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


# --- stateful: sequences of calls linked by what earlier answers returned ----------------------


class LiveLab:
    """The Azure app served by uvicorn on one event loop in a thread, as `lab serve` runs it
    (minus TLS): long-running operations, console brokers and scale-set locks live across calls,
    which a per-call ASGI client (a new loop each time) would cut short. Each scenario starts
    from a fresh lab (`fresh`: same server, new data dir), so a failing chain replays: vm1 and a
    one-instance scale set `web` in rg1, storage account fuzzdiag."""

    def __init__(self, tmp: Path) -> None:
        import asyncio
        import threading

        import uvicorn

        self.tmp = tmp
        self.cache = tmp / "images"
        make_image(self.cache, "tiny", disk=True)
        self.count = 0
        self.lab = self._new_lab()
        self.app: Any = create_azure_app(self.lab, KEY, b"s" * 32)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning",
                                lifespan="off")  # fmt: skip
        self.server = uvicorn.Server(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete,
                                       args=(self.server.serve(),), daemon=True)  # fmt: skip
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                break
            threading.Event().wait(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        self.run(self._seed())

    def _new_lab(self) -> Lab:
        self.count += 1
        lab = Lab(Settings(data_dir=self.tmp / f"data{self.count}", image_cache=self.cache,
                           images_dir=self.tmp / "recipes", libvirt_uri="test:///default",
                           accel="qemu", shutdown_timeout=SHUTDOWN_TIMEOUT),
                  FakeHypervisor())  # fmt: skip
        lab.storage_accounts.put(StorageAccount(
            subscription_id=SUBSCRIPTION, resource_group="rg1", name="fuzzdiag"))  # fmt: skip
        return lab

    async def _seed(self) -> None:
        from lab.domain.vm import BootDiagnosticsModel
        from tests.unit.fakelab import new_vm
        from tests.unit.test_scale_sets import model

        diag = BootDiagnosticsModel(enabled=True, storage_account="fuzzdiag")
        await self.lab.vms.create(new_vm("vm1", "rg1", boot_diagnostics=diag))
        await self.lab.scale_sets.put(model(capacity=1))

    async def _swap(self, lab: Lab) -> None:
        old, self.lab = self.lab, lab
        for op in self.app.state.operations.values():  # the old lab's work ends with it
            if op.task is not None:
                op.task.cancel()
        self.app.state.operations = {}
        self.app.state.lab = lab
        old.consoles.close_all()
        await self._seed()

    def fresh(self) -> None:
        self.run(self._swap(self._new_lab()))

    def run(self, coro: Any) -> Any:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def close(self) -> None:
        self.run(self._close_consoles())
        self.server.should_exit = True
        self.thread.join(10)

    async def _close_consoles(self) -> None:
        self.lab.consoles.close_all()


def _often_known(case: schemathesis.Case) -> None:
    """Most of the time, path parameters name what the seeded lab holds (the subscription
    above all: without it every call is a 404 before any handler runs), and `api-version`
    is there."""
    import random  # seeded by hypothesis for each example: a failure replays

    for key, values in KNOWN.items():
        if case.path_parameters and key in case.path_parameters and random.random() < 0.8:
            case.path_parameters[key] = random.choice(values)
    # Optional in the schema (so a missing one gets Azure's code), so often left out by the
    # generator: without it every call stops at 400 MissingApiVersionParameter.
    if random.random() < 0.9 and "api-version" not in (case.query or {}):
        case.query = {**(case.query or {}), "api-version": "2024-07-01"}


class LabWorkflow(schemathesis.openapi.from_dict(schema.raw_schema).as_state_machine()):  # type: ignore[misc]
    """Chains of calls that schemathesis links by the schema (a PUT's name reused by a GET, an
    action, a DELETE, ...), with the lab's token; every answer is checked as above. Path
    parameters often name what exists, so chains get past 404 into the lab's real paths."""

    live: LiveLab | None = None

    def setup(self) -> None:
        assert self.live is not None
        self.live.fresh()

    def before_call(self, case: schemathesis.Case) -> None:
        _often_known(case)

    def call(self, case: schemathesis.Case, **kwargs: Any) -> Any:
        assert self.live is not None
        return case.call(base_url=self.live.base_url, timeout=30, **kwargs)

    def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
        return {"headers": {"Authorization": f"Bearer {TOKEN}"}}

    def validate_response(self, response: Any, case: schemathesis.Case,
                          additional_checks: Any = None, **kwargs: Any) -> None:  # fmt: skip
        _check_answer(case, response, "stateful")


def test_stateful_sequences_answer_no_5xx(tmp_path: Path) -> None:
    live = LiveLab(tmp_path)
    try:
        LabWorkflow.live = live
        LabWorkflow.run(settings=settings(max_examples=STATEFUL_EXAMPLES, stateful_step_count=8,
                                          deadline=None, database=None,
                                          suppress_health_check=list(HealthCheck)))  # fmt: skip
    finally:
        live.close()
    # The chains got past the front door: some calls succeeded on real resources.
    assert STATUSES["stateful 2xx"] > 0, STATUSES


# --- what the fuzzers found, kept as plain regression tests --------------------------------------


def test_found_a_scale_set_location_that_is_no_region_is_refused(lab: Lab) -> None:
    """Was a 500 (stateful run): a set PUT with `location: "\U000c5546..."` was stored, and
    its next long-running answer (the DELETE) could not encode the operation URLs."""
    from tests.unit.test_azure_api import OWNER, scenario
    from tests.unit.test_azure_vmss import SS, body

    async def go(c: Any) -> None:
        for bad in ("\U000c5546", "West Europe", "a/b", "x" * 65):
            r = await c.put(SS + "?api-version=2024-07-01", headers=OWNER,
                            json={**body(0), "location": bad})  # fmt: skip
            assert r.status_code == 400 and r.json()["error"]["target"] == "location", r.text
        assert (await c.get(SS + "?api-version=2024-07-01", headers=OWNER)).status_code == 404

    scenario(lab, go)


def test_found_an_api_version_that_is_not_latin_1_still_gets_operation_headers(lab: Lab) -> None:
    """Was a 500 waiting to happen (the same header encoding): `api-version` is echoed into the
    `Azure-AsyncOperation` and `Location` URLs of every long-running answer."""
    from tests.unit.test_azure_api import OWNER, VM1, scenario

    async def go(c: Any) -> None:
        r = await c.post(VM1 + "/restart?api-version=2024-07-01\u00e9\U0001f600", headers=OWNER)
        assert r.status_code == 202, r.text
        url = r.headers["azure-asyncoperation"]
        assert url.endswith("api-version=2024-07-01%C3%A9%F0%9F%98%80"), url
        assert (await c.get(r.headers["location"], headers=OWNER)).status_code in (200, 202)

    scenario(lab, go)


@pytest.fixture(scope="module", autouse=True)
def _report_calls() -> Any:
    """With `LAB_OPENAPI_REPORT=<file>`, the number of calls made is written there (the bench
    reads it for the README's figures)."""
    yield
    report = os.environ.get("LAB_OPENAPI_REPORT")
    if report:
        import json

        Path(report).write_text(json.dumps({**CALLS, **STATUSES}, indent=1) + "\n")
