"""Shared-access signatures on the blob endpoint: a SAS from `retrieveBootDiagnosticsData` reads
its own blob and nothing else. Tampered, expired, not yet valid, for another blob, for another
VM, signed with another lab's secret, stripped: 403 `AuthenticationFailed` (Azure Storage's code,
in its XML body and `x-ms-error-code`), for GET and HEAD alike."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit

from lab.api.azure.errors import SasRejected
from lab.api.security import sas
from lab.services.lab import Lab
from tests.unit.fakelab import SUBSCRIPTION, new_vm
from tests.unit.test_azure_api import OWNER, STORAGE_KEY, Client, V, scenario

RG = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg1/providers/Microsoft.Compute"


async def uris(c: Client, vm: str) -> dict[str, str]:
    r = await c.post(f"{RG}/virtualMachines/{vm}/retrieveBootDiagnosticsData{V}", headers=OWNER)
    assert r.status_code == 200, r.text
    result: dict[str, str] = r.json()
    return result


def split(uri: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(uri)
    return parts.path, dict(parse_qsl(parts.query))


def with_fields(query: dict[str, str], **fields: str) -> str:
    return urlencode({**query, **fields})


def resign(path: str, query: dict[str, str], secret: bytes, now: datetime, minutes: int) -> str:
    _, account, container, blob = path.split("/", 3)
    return sas.sign(secret, account, container, blob, minutes=minutes, now=now)


def test_a_sas_reads_its_own_blob_and_nothing_else(lab: Lab) -> None:
    async def body(c: Client) -> None:
        vm1, vm2 = await uris(c, "vm1"), await uris(c, "vm2")
        log, q = split(vm1["serialConsoleLogBlobUri"])
        shot, shot_q = split(vm1["consoleScreenshotBlobUri"])
        other_log, _ = split(vm2["serialConsoleLogBlobUri"])
        now = datetime.now(UTC)
        sig = q["sig"]
        flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
        refused: dict[str, str] = {
            "tampered signature": f"{log}?{with_fields(q, sig=flipped)}",
            "signature of another lab": f"{log}?{resign(log, q, b'x' * 32, now, 60)}",
            "expired (signed an hour ago for 5 minutes)":
                f"{log}?{resign(log, q, STORAGE_KEY, now - timedelta(hours=1), 5)}",
            "not yet valid (signed for tomorrow)":
                f"{log}?{resign(log, q, STORAGE_KEY, now + timedelta(days=1), 60)}",
            "expiry pushed later": f"{log}?{with_fields(q, se='2099-01-01T00:00:00Z')}",
            "write permission added": f"{log}?{with_fields(q, sp='rw')}",
            "http allowed": f"{log}?{with_fields(q, spr='https,http')}",
            "the log's SAS on the screenshot": f"{shot}?{urlencode(q)}",
            "the screenshot's SAS on the log": f"{log}?{urlencode(shot_q)}",
            "vm1's SAS on vm2's log": f"{other_log}?{urlencode(q)}",
            "another container": f"{log.replace('/bootdiagnostics-', '/x-', 1)}?{urlencode(q)}",
            "no signature": f"{log}?{urlencode({k: v for k, v in q.items() if k != 'sig'})}",
            "no SAS at all": log,
        }  # fmt: skip
        for what, url in refused.items():
            for method in ("GET", "HEAD"):
                r = await c.request(method, url)
                assert r.status_code == 403, (what, method, r.status_code, r.text[:200])
                assert r.headers["x-ms-error-code"] == "AuthenticationFailed", (what, r.headers)
                if method == "GET":
                    assert b"<Code>AuthenticationFailed</Code>" in r.content, (what, r.text)
                    assert b"Passw0rd" not in r.content
        # The controls: each SAS reads its own blob (the same client, the same code path).
        for uri in (vm1["serialConsoleLogBlobUri"], vm2["serialConsoleLogBlobUri"]):
            ok = await c.get(uri)
            assert ok.status_code == 200 and ok.content, ok.text
        fresh = f"{log}?{resign(log, q, STORAGE_KEY, now, 5)}"
        assert (await c.get(fresh)).status_code == 200  # re-signing itself is not the problem

    scenario(lab, body, new_vm("vm1"), new_vm("vm2"))


def test_an_expired_sas_says_when_it_expired(lab: Lab) -> None:
    async def body(c: Client) -> None:
        log, q = split((await uris(c, "vm1"))["serialConsoleLogBlobUri"])
        past = datetime(2020, 1, 1, tzinfo=UTC)
        r = await c.get(f"{log}?{resign(log, q, STORAGE_KEY, past, 5)}")
        assert r.status_code == 403
        assert b"Signed expiry time [Wed, 01 Jan 2020 00:05:00 GMT]" in r.content, r.text

    scenario(lab, body)


def test_the_sas_signing_covers_every_field() -> None:
    """Unit level: changing any signed field (or the blob's name) breaks the signature."""
    query = dict(parse_qsl(sas.sign(STORAGE_KEY, "acct", "cont", "b.log", minutes=5)))
    sas.verify(STORAGE_KEY, "acct", "cont", "b.log", query)
    for field in ("sv", "sr", "sp", "st", "se", "spr"):
        changed = {**query, field: query[field] + "x"}
        try:
            sas.verify(STORAGE_KEY, "acct", "cont", "b.log", changed)
        except SasRejected as exc:
            assert exc.status == 403 and exc.code == "AuthenticationFailed", field
        else:
            raise AssertionError(f"changing {field} kept the SAS valid")
    for account, container, blob in (("acct2", "cont", "b.log"), ("acct", "cont2", "b.log"),
                                     ("acct", "cont", "b.log2"), ("acct", "cont", "B.log")):
        try:
            sas.verify(STORAGE_KEY, account, container, blob, query)
        except SasRejected:
            continue
        raise AssertionError(f"the SAS for acct/cont/b.log opened {account}/{container}/{blob}")


