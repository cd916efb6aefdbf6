"""Blob names that spell a way out of a container (`..`, `%2e%2e` in any case or encoded twice,
absolute paths, backslashes, NUL, empty segments) are refused: by the domain rule, by the blob
store before it touches the file system, and by the blob endpoint with Azure Storage's XML error
(400 `InvalidResourceName`) even under a valid SAS for that very name; and while the endpoint
answers them, no file outside the blob directory is opened."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.api.azure.app import create_azure_app
from lab.api.security import sas
from lab.domain.errors import InvalidInput
from lab.domain.names import validate_blob_name
from lab.hypervisor.fake import FakeHypervisor
from lab.services.lab import Lab
from lab.settings import Settings
from lab.storage.blobs import BlobStore
from tests.unit.fakelab import new_vm, run

TOKEN_KEY, STORAGE_KEY = b"k" * 32, b"s" * 32

#: (name as it appears in the URL path, still percent-encoded; what the name decodes to).
TRAVERSALS = [
    "..",
    ".",
    "%2e%2e",
    "%2E%2e",
    "%2E%2E",
    "%252e%252e",
    "%25252e%25252E",
    "..%2Fsecret.txt",
    "..%2F..%2Fsecret.txt",
    "%2e%2e%2f%2e%2e%2fsecret.txt",
    "%252e%252e%252fsecret.txt",
    "a/../../secret.txt",
    "a/%2e%2e/%2e%2e/secret.txt",
    "%2Fetc%2Fpasswd",
    "/etc/passwd",
    "%252Fetc%252Fpasswd",
    "..%5Csecret.txt",
    "a%5C..%5Cb",
    "%255c",
    "x%00y",
    "x%2500y",
    "a//b",
    "a/",
    "%0a",
]


def test_the_domain_rule_refuses_every_spelling() -> None:
    for raw in TRAVERSALS:
        for name in (raw, unquote(raw)):  # as the server decodes it once, and as sent
            with pytest.raises(InvalidInput) as info:
                validate_blob_name(name)
            assert info.value.code == "InvalidResourceName" and info.value.status == 400
            assert repr(name) in info.value.message, info.value.message


@pytest.mark.parametrize(
    "name", ["vm1.0000.serialconsole.log", "a", "name with spaces..log", "x%y", "dir/file.log",
             "%zz", "é.log", "a" * 1024],
)  # fmt: skip
def test_ordinary_names_pass_the_domain_rule(name: str) -> None:
    validate_blob_name(name)


_BITS = ["a", ".", "..", "/", "%2e", "%2E", "%2f", "%5c", "%25", "\\", "%00", "\x00", "b.log", "%"]


@settings(max_examples=400, deadline=None, database=None)
@given(st.lists(st.sampled_from(_BITS), min_size=1, max_size=8))
def test_no_accepted_name_decodes_to_a_path_out_of_its_container(parts: list[str]) -> None:
    """Whatever is accepted, decoded any number of times, stays a relative path below its
    container: no '..' segment, no leading '/', no backslash, no NUL."""
    name = "".join(parts)
    try:
        validate_blob_name(name)
    except InvalidInput:
        return
    for _ in range(6):
        assert not name.startswith("/") and "\\" not in name and "\x00" not in name, name
        assert ".." not in name.split("/") and "." not in name.split("/"), name
        name = unquote(name)


def test_the_store_refuses_them_before_the_file_system(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    store.ensure_container("diagacct", "cont")
    (tmp_path / "secret.txt").write_text("secret")
    for raw in TRAVERSALS:
        for name in (raw, unquote(raw)):
            with pytest.raises(InvalidInput) as info:
                store.read("diagacct", "cont", name)
            assert info.value.code == "InvalidResourceName", name
    # Names with a newline after a valid account or container are not valid names either.
    for account, container in (("diagacct\n", "cont"), ("diagacct", "cont\n")):
        with pytest.raises(InvalidInput):
            store.read(account, container, "x.log")


class _Opens:
    """Every file opened in this process while armed (a `sys.addaudithook` cannot be removed,
    so one hook serves the whole module)."""

    armed = False
    paths: list[str] = []

    @classmethod
    def hook(cls, event: str, args: tuple[Any, ...]) -> None:
        if cls.armed and event == "open" and isinstance(args[0], str | bytes | Path):
            cls.paths.append(str(args[0]))


sys.addaudithook(_Opens.hook)


async def _get(app: Any, raw_path: str, query: str, method: str = "GET") -> tuple[int, dict[str,
               str], bytes]:  # fmt: skip
    """One request as a server hands it to the app: `path` percent-decoded once, `raw_path` as
    sent (a client library would fold `..` segments before sending; an attacker's does not)."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "https", "path": unquote(raw_path), "raw_path": raw_path.encode(),
        "query_string": query.encode(), "root_path": "", "headers": [(b"host", b"lab.test")],
        "server": ("lab.test", 443), "client": ("127.0.0.1", 5555),
    }  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], headers, body


def test_the_endpoint_refuses_them_in_azure_storages_shape_and_reads_nothing_outside(
    lab: Lab,
) -> None:
    app = create_azure_app(lab, TOKEN_KEY, STORAGE_KEY)
    secret = lab.settings.data_dir / "secret.txt"

    async def go() -> None:
        view = await lab.vms.create(new_vm())
        blobs = lab.ctx.boot_blobs(view.identity, view.model)
        secret.write_text("TOP SECRET")
        prefix = f"/{blobs.account}/{blobs.container}/"
        # The real blob answers under its SAS: the route still works.
        query = sas.sign(STORAGE_KEY, blobs.account, blobs.container, blobs.serial_log,
                         minutes=5)  # fmt: skip
        _Opens.paths.clear()
        _Opens.armed = True
        try:
            status, _, body = await _get(app, prefix + blobs.serial_log, query)
            assert status == 200 and body
            for raw in TRAVERSALS:
                name = unquote(raw)
                # A valid SAS for exactly this name: the refusal is the name's, not the SAS's.
                query = sas.sign(STORAGE_KEY, blobs.account, blobs.container, name, minutes=5)
                for method in ("GET", "HEAD"):
                    status, headers, body = await _get(app, prefix + raw, query, method)
                    assert status == 400, (raw, status, body)
                    assert headers["x-ms-error-code"] == "InvalidResourceName"
                    assert headers["content-type"].startswith("application/xml"), raw
                    assert headers.get("x-ms-request-id")
                    if method == "GET":
                        assert body.startswith(b'<?xml version="1.0" encoding="utf-8"?><Error>')
                        assert b"<Code>" in body and b"TOP SECRET" not in body
                # The same name as the whole path after the account (a traversal of the
                # container segment itself) is never served (the router may redirect `/a/..`
                # to `/a/../`, which serves nothing either).
                status, headers, body = await _get(app, f"/{blobs.account}/{raw}", query)
                assert status in (307, 400, 403, 404) and b"TOP SECRET" not in body, (raw, status)
        finally:
            _Opens.armed = False
        data = lab.settings.data_dir.resolve()
        opened = [Path(p).resolve() for p in _Opens.paths]
        # The hook sees reads: the log served before the refusals was opened under blobs/.
        assert any(p.is_relative_to(data / "blobs") for p in opened), opened
        outside = [p for p in opened if not p.is_relative_to(data / "blobs")
                   and (p.is_relative_to(data) or str(p).startswith("/etc"))]  # fmt: skip
        assert outside == [], outside

    run(lab, go)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        # ARM paths keep ARM's JSON answers: the blob route does not swallow them.
        ("/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/virtualMachines/v/start",
         405),
        ("/subscriptions/s/resourceGroups/g/no/such/route/at/all", 404),
        ("/providers/Microsoft.SerialConsole/nothing/here", 404),
    ],
)  # fmt: skip
def test_arm_paths_keep_their_json_errors(lab: Lab, path: str, status: int) -> None:
    app = create_azure_app(lab, TOKEN_KEY, STORAGE_KEY)

    async def go() -> None:
        got, headers, body = await _get(app, path, "api-version=2024-07-01")
        assert got == status, (got, body)
        assert headers["content-type"].startswith("application/json") and b'"error"' in body

    run(lab, go)


@pytest.fixture(scope="module")
def shared_app(tmp_path_factory: pytest.TempPathFactory, image_cache: Path) -> Any:
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), image_cache=image_cache,
                        images_dir=image_cache / "recipes", libvirt_uri="test:///default",
                        accel="qemu")  # fmt: skip
    return create_azure_app(Lab(settings, FakeHypervisor()), TOKEN_KEY, STORAGE_KEY)


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(name=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1,
                    max_size=40) | st.sampled_from(TRAVERSALS))  # fmt: skip
def test_any_blob_path_gets_an_azure_storage_answer_never_a_5xx(shared_app: Any, name: str) -> None:
    raw = "/labmanageddiag/bootdiagnostics-x-y/" + quote(name, safe="/%")
    query = sas.sign(STORAGE_KEY, "labmanageddiag", "bootdiagnostics-x-y", unquote(name),
                     minutes=5)  # fmt: skip
    status, headers, body = asyncio.run(_get(shared_app, raw, query))
    assert status in (400, 403, 404), (name, status, body)
    assert headers["content-type"].startswith("application/xml"), (name, headers)
    assert body.startswith(b'<?xml version="1.0" encoding="utf-8"?><Error><Code>')
