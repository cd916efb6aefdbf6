"""Storage parity for boot diagnostics, as the Azure CLI reads a boot log: accounts advertise
the lab's own blob endpoint (a prefix of the instance view's URIs), `listKeys` gives two keys,
`regenerateKey` rotates one, and blob reads take Shared Key exactly as the official
`azure-storage-blob` signs it; `allowSharedKeyAccess: false` refuses Shared Key, not SAS;
managed boot diagnostics name no blob in the instance view. The Shared Key parser is fuzzed."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.storage.blob import BlobClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.api.security.tokens import issue, signing_key
from lab.domain.storage_account import StorageAccount
from lab.domain.vm import BootDiagnosticsModel
from lab.hypervisor.fake import FakeHypervisor
from lab.services.lab import Lab
from lab.settings import Settings
from tests.unit.fakelab import SHUTDOWN_TIMEOUT, SUBSCRIPTION, banner, new_vm
from tests.unit.securitylab import LiveLab, free_port

RG = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg1"
ACCOUNT = f"{RG}/providers/Microsoft.Storage/storageAccounts/diag1"
V = "?api-version=2023-05-01"


def custom(account: str) -> BootDiagnosticsModel:
    uri = f"https://{account}.blob.core.windows.net/"
    return BootDiagnosticsModel(enabled=True, storage_account=account, storage_uri=uri)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, image_cache: Path) -> Iterator[LiveLab]:
    root = tmp_path_factory.mktemp("keys")
    settings_ = Settings(data_dir=root / "data", image_cache=image_cache,
                         images_dir=root / "recipes", libvirt_uri="test:///default",
                         accel="qemu", shutdown_timeout=SHUTDOWN_TIMEOUT,
                         api_port=free_port())  # fmt: skip
    lab = Lab(settings_, FakeHypervisor())
    for name, shared_key in (("diag1", True), ("nokey1", False)):
        lab.storage_accounts.put(StorageAccount(subscription_id=SUBSCRIPTION, resource_group="rg1",
                                                name=name, allow_shared_key_access=shared_key))
    server = LiveLab(lab).start(new_vm("vm1", boot_diagnostics=custom("diag1")),
                                new_vm("vm2", boot_diagnostics=custom("nokey1")),
                                new_vm("vm3"))  # fmt: skip
    yield server
    server.stop()


def tls(live: LiveLab) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=live.ca)


def arm(live: LiveLab) -> httpx.Client:
    key = signing_key(live.lab.settings.tls_dir / "token-signing.key")
    token = issue(key, user="owner", roles=[("Owner", "/")])
    return httpx.Client(base_url=live.base, verify=tls(live),
                        headers={"Authorization": f"Bearer {token}"})  # fmt: skip


def log_uri(c: httpx.Client, vm: str) -> str | None:
    view = c.get(f"{RG}/providers/Microsoft.Compute/virtualMachines/{vm}/instanceView{V}").json()
    return view["bootDiagnostics"].get("serialConsoleLogBlobUri")


def keys(c: httpx.Client, account: str = ACCOUNT) -> list[str]:
    r = c.post(f"{account}/listKeys{V}&$expand=kerb")
    assert r.status_code == 200, r.text
    assert [k["keyName"] for k in r.json()["keys"]] == ["key1", "key2"]
    return [k["value"] for k in r.json()["keys"]]


def blob(live: LiveLab, uri: str, key: str) -> BlobClient:
    return BlobClient.from_blob_url(uri, credential=key, connection_verify=live.ca)


def test_the_cli_path_endpoint_prefix_list_keys_shared_key_read(live: LiveLab) -> None:
    with arm(live) as c:
        uri = log_uri(c, "vm1")
        assert uri is not None
        accounts = c.get(f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Storage"
                         f"/storageAccounts{V}").json()["value"]  # fmt: skip
        matching = [a for a in accounts if uri.startswith(a["properties"]["primaryEndpoints"]
                                                          ["blob"])]  # fmt: skip
        assert [a["name"] for a in matching] == ["diag1"]  # what `az` looks for
        key1, key2 = keys(c)
        assert key1 != key2 and len(key1) == 88  # 64 bytes, base64, as Azure's
        assert blob(live, uri, key1).download_blob().readall().startswith(banner("vm1")[:10])
        assert blob(live, uri, key2).get_blob_properties().size > 0  # HEAD, the other key
        with pytest.raises(ClientAuthenticationError) as wrong:
            blob(live, uri, key1[:-4] + "AAA=").download_blob()
        assert wrong.value.error_code == "AuthenticationFailed"


def test_regenerate_key_retires_the_old_value(live: LiveLab) -> None:
    with arm(live) as c:
        uri = log_uri(c, "vm1")
        assert uri is not None
        key1, key2 = keys(c)
        r = c.post(f"{ACCOUNT}/regenerateKey{V}", json={"keyName": "key1"})
        assert r.status_code == 200
        new1, same2 = (k["value"] for k in r.json()["keys"])
        assert new1 != key1 and same2 == key2 and keys(c) == [new1, key2]
        with pytest.raises(ClientAuthenticationError):
            blob(live, uri, key1).download_blob()
        assert blob(live, uri, new1).download_blob().readall()
        bad = c.post(f"{ACCOUNT}/regenerateKey{V}", json={"keyName": "key3"})
        assert bad.status_code == 400 and "key1 or key2" in bad.text


def test_shared_key_off_refuses_shared_key_but_not_sas(live: LiveLab) -> None:
    with arm(live) as c:
        uri = log_uri(c, "vm2")
        assert uri is not None
        nokey = ACCOUNT.replace("diag1", "nokey1")
        with pytest.raises(HttpResponseError) as refused:
            blob(live, uri, keys(c, nokey)[0]).download_blob()
        assert refused.value.error_code == "KeyBasedAuthenticationNotPermitted"
        vm2 = f"{RG}/providers/Microsoft.Compute/virtualMachines/vm2"
        signed = c.post(f"{vm2}/retrieveBootDiagnosticsData{V}").json()["serialConsoleLogBlobUri"]
        sas_client = BlobClient.from_blob_url(signed, connection_verify=live.ca)
        assert sas_client.download_blob().readall()


def test_managed_boot_diagnostics_name_no_blob_in_the_instance_view(live: LiveLab) -> None:
    with arm(live) as c:
        assert log_uri(c, "vm3") is None
        vm3 = f"{RG}/providers/Microsoft.Compute/virtualMachines/vm3"
        signed = c.post(f"{vm3}/retrieveBootDiagnosticsData{V}").json()["serialConsoleLogBlobUri"]
        assert urlsplit(signed).path.startswith("/labmanageddiag/")
        # The managed account has no keys to sign with: Shared Key is refused, SAS reads.
        path = urlsplit(signed).path
        r = httpx.get(f"{live.base}{path}", verify=tls(live),
                      headers={"Authorization": "SharedKey labmanageddiag:AAAA",
                               "x-ms-date": "Mon, 01 Jan 2024 00:00:00 GMT"})  # fmt: skip
        assert r.status_code == 403
        assert httpx.get(signed, verify=tls(live)).status_code == 200


#: What an HTTP header value can carry (anything else, the client library refuses to send).
HEADER_TEXT = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(authorization=st.one_of(
           HEADER_TEXT,
           st.builds(lambda a, s: f"SharedKey {a}:{s}",
                     st.sampled_from(["diag1", "DIAG1", "nokey1", "x", ""]),
                     st.text(alphabet="ABCDEFGHabcdefgh0123456789+/=", max_size=60))),
       date=st.sampled_from([None, "", "Mon, 01 Jan 2024 00:00:00 GMT", "garbage"]),
       query=st.sampled_from(["", "?comp=x", "?a=1&a=2&B=%zz", "?sig="]))  # fmt: skip
def test_the_shared_key_parser_never_answers_5xx(
    live: LiveLab, authorization: str, date: str | None, query: str
) -> None:
    headers = {"Authorization": authorization.strip()}  # h11 sends no edge whitespace
    if date is not None:
        headers["x-ms-date"] = date
    with arm(live) as c:
        uri = log_uri(c, "vm1")
    assert uri is not None
    r = httpx.get(uri + query, verify=tls(live), headers=headers)
    assert r.status_code in (400, 401, 403, 404, 416), (authorization, r.status_code, r.text)
    assert r.headers.get("x-ms-error-code"), r.text
