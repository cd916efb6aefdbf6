"""Security against a real `lab serve` (its own daemon and data dir) and one booted tiny guest
shared by the module: old TLS and plain HTTP refused on the API port, secrets private on a fresh
data dir, foreign `Origin`s refused by the gateway while the Azure CLI's websocket library logs
in, the gateway's abuse cases with a real guest, and the admin password seen nowhere: not in an
API response, the daemon's log, the audit log, the state files or the guest's serial log.
(The same ground at unit level, with the matrices and counts: tests/unit/test_security_*.py.)"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import ssl
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

from lab.settings import Settings
from tests.integration.labharness import LabHarness
from tests.unit.test_security_transport import (
    ALERT,
    HANDSHAKE,
    PROTOCOL_VERSION_ALERT,
    SECRETS,
    handshake,
)

pytestmark = pytest.mark.integration

SUB = "22222222-3333-4444-5555-666666666666"
FILE_PASSWORD = "Hv5!secFILE40kd"
PUT_PASSWORD = "Jt3@secPUT71nw"
LAB = f"""\
subscriptionId: {SUB}
resourceGroups:
  - name: sec-rg
    storageAccounts:
      - name: secdiag
    virtualMachines:
      - name: sec1
        image: tiny
        size: {{vcpus: 1, memoryMiB: 256}}
        adminUsername: azureuser
        adminPassword: "{FILE_PASSWORD}"
        bootDiagnostics: {{enabled: true, storageUri: "https://secdiag.blob.core.windows.net/"}}
"""
V = "?api-version=2024-07-01"
PASSWORD_GUARD_S = 0.5
VM = f"/subscriptions/{SUB}/resourceGroups/sec-rg/providers/Microsoft.Compute/virtualMachines"
PORT0 = f"{VM}/sec1/providers/Microsoft.SerialConsole/serialPorts/0"


class Api:
    """requests against the lab's HTTPS API that keeps every response it got."""

    def __init__(self, lab: LabHarness) -> None:
        self.lab = lab
        self.base = f"https://127.0.0.1:{lab.api_port}"
        self.said: list[str] = []

    def token(self, *args: str) -> str:
        token = self.lab.cli("token", *args).stdout.strip()
        return token

    def call(self, method: str, path: str, token: str, **kw: Any) -> requests.Response:
        r = requests.request(method, self.base + path, verify=str(self.lab.ca), timeout=60,
                             headers={"Authorization": f"Bearer {token}"}, **kw)  # fmt: skip
        self.said.append(f"{r.status_code} {method} {path}\n{r.headers}\n{r.text}")
        return r

    def settle(self, r: requests.Response, token: str, timeout: float = 180) -> None:
        """Poll a long-running operation (its Azure-AsyncOperation URL) until it ends."""
        assert r.status_code in (200, 201, 202), r.text
        url = r.headers["azure-asyncoperation"].removeprefix(self.base)
        deadline = time.monotonic() + timeout
        while (status := self.call("GET", url, token).json()["status"]) == "InProgress":
            assert time.monotonic() < deadline, "the operation did not end"
            time.sleep(0.5)
        assert status == "Succeeded", status

    def connection_string(self, token: str) -> str:
        r = self.call("POST", PORT0 + "/connect" + V, token)
        assert r.status_code == 200, r.text
        cs: str = r.json()["connectionString"]
        return cs


@pytest.fixture(scope="module")
def sec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabHarness]:
    data_dir = Path(tmp_path_factory.mktemp("seclab"))
    h = LabHarness(data_dir=data_dir, image_cache=Settings().image_cache_dir)
    try:
        h.cli("image", "build", "tiny")
        h.start_daemon()
        h.cli("up", str(h.write_lab("sec.yaml", LAB)))
        h.wait_for_log("sec1", rb"sec1 login: ", timeout=180)
        yield h
    finally:
        h.cleanup()


@pytest.fixture(scope="module")
def api(sec: LabHarness) -> Api:
    return Api(sec)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_old_tls_and_plain_http_are_refused_on_the_api_port(sec: LabHarness) -> None:
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        hello, answer = handshake(sec.api_port, version)
        assert hello[0] == HANDSHAKE and hello[5] == 0x01
        if answer:
            assert answer[0] == ALERT and answer[6] == PROTOCOL_VERSION_ALERT, answer[:8].hex()
    hello, answer = handshake(sec.api_port, ssl.TLSVersion.TLSv1_2)
    assert answer[0] == HANDSHAKE and answer[5] == 0x02  # ServerHello: the control
    with socket.create_connection(("127.0.0.1", sec.api_port), timeout=10) as plain:
        plain.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert not plain.recv(4096).startswith(b"HTTP/")


def test_the_fresh_data_dirs_secrets_are_private(sec: LabHarness) -> None:
    tls = sec.data_dir / "tls"
    assert stat.S_IMODE(tls.stat().st_mode) == 0o700
    for name in SECRETS:
        assert stat.S_IMODE((tls / name).stat().st_mode) == 0o600, name


def test_foreign_origin_refused_the_clis_library_logs_in(sec: LabHarness, api: Api) -> None:
    token = api.token("--role", "Virtual Machine Contributor", "--user", "secuser")
    cs = api.connection_string(token)
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(cs, sslopt={"ca_certs": str(sec.ca)}, timeout=30,
                                    origin="https://evil.example")  # fmt: skip
    assert refused.value.status_code == 403
    ws = websocket.create_connection(cs, sslopt={"ca_certs": str(sec.ca)}, timeout=60)
    with contextlib.closing(ws):
        ws.recv()
        ws.send(token)
        for ch in "\r":
            ws.send(ch)
        seen = read_until(ws, r"login: ")
        for ch in "azureuser\r":
            ws.send(ch)
        seen += read_until(ws, r"Password: ")
        # busybox's login prints "Password: " and only then turns the echo off: a password
        # typed at once can be echoed into the serial log. A person (or a careful script)
        # types later; so does this test.
        time.sleep(PASSWORD_GUARD_S)
        for ch in FILE_PASSWORD + "\r":
            ws.send(ch)
        seen += read_until(ws, r"\$ ")
        assert FILE_PASSWORD not in seen  # login does not echo it
        for ch in "exit\r":
            ws.send(ch)
        read_until(ws, r"login: ")


def read_until(ws: websocket.WebSocket, pattern: str, timeout: float = 60) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, seen):
        ws.settimeout(max(0.1, deadline - time.monotonic()))
        if time.monotonic() > deadline:
            raise AssertionError(f"{pattern!r} not seen: {seen[-300:]!r}")
        frame = ws.recv()
        seen += frame if isinstance(frame, str) else frame.decode(errors="replace")
    return seen


def test_gateway_abuse_with_a_real_guest(sec: LabHarness, api: Api) -> None:
    token = api.token("--role", "Virtual Machine Contributor", "--user", "abuser")
    ca = {"ca_certs": str(sec.ca)}
    # Garbage, then a huge frame: the connection closes with 1009; the guest does not care.
    ws = websocket.create_connection(api.connection_string(token), sslopt=ca, timeout=30)
    with contextlib.closing(ws):
        ws.recv()
        ws.send(token)
        for _ in range(20):
            ws.send_binary(os.urandom(64).replace(b"\x03", b"").replace(b"\x04", b""))
        ws.send("\x15")  # Ctrl+U: what the garbage typed is dropped
        # The server refuses on the frame's header and closes while the rest is still being
        # sent, so the write may fail: it is written on the socket itself, and frames are read
        # with recv_frame (recv_data would answer the close on the closed socket, and fail), so
        # the close frame the server sent before it went is still read. A timeout
        # (WebSocketTimeoutException), an EOF before the close frame or another code fails.
        frame = websocket.ABNF.create_frame(b"\x00" * (1024 * 1024), websocket.ABNF.OPCODE_BINARY)
        with contextlib.suppress(OSError):
            ws.sock.sendall(frame.format())
        got = ws.recv_frame()
        while got.opcode != websocket.ABNF.OPCODE_CLOSE:
            got = ws.recv_frame()
        assert int.from_bytes(got.data[:2], "big") == 1009, got.data
    # A wrong token, then a reused connection string.
    cs = api.connection_string(token)
    for bearer, code in (("not-a-token", 4401), (token, None), (token, 4404)):
        ws = websocket.create_connection(cs, sslopt=ca, timeout=30)
        with contextlib.closing(ws):
            ws.recv()
            ws.send(bearer)
            if code is None:  # the owner's first use: a live console
                ws.send("\r")
                read_until(ws, r"login: ")
                continue
            opcode, data = ws.recv_data(control_frame=True)
            while opcode != websocket.ABNF.OPCODE_CLOSE:
                opcode, data = ws.recv_data(control_frame=True)
            assert int.from_bytes(data[:2], "big") == code
    # 200 connects in a row; the guest still answers at the end.
    started = time.monotonic()
    for _ in range(200):
        ws = websocket.create_connection(api.connection_string(token), sslopt=ca, timeout=30)
        with contextlib.closing(ws):
            ws.recv()
            ws.send(token)
    print(f"\n200 gateway connects to a real guest in {time.monotonic() - started:.1f} s")
    ws = websocket.create_connection(api.connection_string(token), sslopt=ca, timeout=30)
    with contextlib.closing(ws):
        ws.recv()
        ws.send(token)
        ws.send("\r")
        read_until(ws, r"login: ")
    # Every session the gateway opened was closed again: the audit log pairs them.
    time.sleep(1)
    events = [json.loads(line) for line in (sec.data_dir / "audit.log").read_text().splitlines()]
    mine = [e for e in events if e.get("user") == "abuser"]
    connects = {e["session"] for e in mine if e["event"] == "connect"}
    disconnects = {e["session"] for e in mine if e["event"] == "disconnect"}
    assert len(connects) >= 203 and connects == disconnects, (len(connects), len(disconnects))


def test_the_admin_password_is_seen_nowhere(sec: LabHarness, api: Api) -> None:
    owner = api.token("--role", "Owner")
    body = {
        "location": "westeurope",
        "properties": {
            "hardwareProfile": {"vmSize": "Lab_1vCPU_256MiB"},
            "storageProfile": {"imageReference": {"offer": "tiny", "sku": "tiny"}},
            "osProfile": {"computerName": "sec2", "adminUsername": "azureuser",
                          "adminPassword": PUT_PASSWORD},
            "diagnosticsProfile": {"bootDiagnostics": {"enabled": True}},
        },
    }  # fmt: skip
    r = api.call("PUT", f"{VM}/sec2{V}", owner, json=body)
    assert r.status_code == 201, r.text
    api.settle(r, owner)
    sec.wait_for_log("sec2", rb"sec2 login: ", timeout=180)
    api.call("PUT", f"{VM}/sec2{V}", owner, json=body)  # an update: the password is not used
    weak = json.loads(json.dumps(body))
    weak["properties"]["osProfile"]["adminPassword"] = PUT_PASSWORD[:5]  # Azure: 6 at least
    assert api.call("PUT", f"{VM}/sec3{V}", owner, json=weak).status_code == 400
    for path in (f"{VM}{V}", f"{VM}/sec1{V}&$expand=instanceView", f"{VM}/sec2/instanceView{V}"):
        assert api.call("GET", path, owner).status_code == 200
    blobs = api.call("POST", f"{VM}/sec1/retrieveBootDiagnosticsData{V}", owner).json()
    log = requests.get(blobs["serialConsoleLogBlobUri"], verify=str(sec.ca), timeout=60)
    assert log.status_code == 200 and b"sec1 login:" in log.content
    api.said.append(log.text)
    sec.cli("ls", "--json")
    api.settle(api.call("DELETE", f"{VM}/sec2{V}", owner), owner)
    # Everything the lab said and wrote, the guests' serial logs included.
    texts = {"API responses": "\n".join(api.said), "daemon log": sec.daemon_log(),
             "CLI": sec.cli("ls", "--json").stdout}  # fmt: skip
    data = sec.data_dir
    files = [data / "audit.log", *(data / "state").iterdir(), *(data / "blobs").rglob("*.log")]
    for path in files:
        if path.is_file():
            texts[str(path.relative_to(data))] = path.read_bytes().decode(errors="replace")
    assert any(name.startswith("blobs/") for name in texts), sorted(texts)
    for secret in (FILE_PASSWORD, PUT_PASSWORD, PUT_PASSWORD[:5]):
        for name, text in texts.items():
            assert secret not in text, f"{secret!r} in {name}"


def test_the_python_apis_login_leaves_no_password_in_the_serial_log(sec: LabHarness) -> None:
    """`lab.client.connect(...).login()` waits for the guest to stop echoing first."""
    from lab.client import connect

    start = sec.log_size("sec1")
    for _ in range(3):
        with connect("sec1", settings=sec.settings, timeout=60) as console:
            console.login("azureuser", FILE_PASSWORD)
            assert console.run("echo ok")[1] == 0
            console.sendline("exit")
    log = sec.boot_log("sec1", start)
    assert log.count(b"Password: ") >= 3
    assert FILE_PASSWORD.encode() not in log
