"""The console gateway under abuse, over the real network stack (`lab serve`'s TLS config and
websocket limits, a `FakeHypervisor` guest that echoes what it is sent): foreign `Origin`s,
garbage, huge frames, frames before the token, wrong tokens, reused connection strings, a
refused role, broken websocket framing, and 1,000 connects in a row. After each, the gateway's
sessions and the broker's subscribers are back to their baseline: nothing leaks."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import websocket  # websocket-client: what the Azure CLI's serial-console extension uses

from lab.api.azure.gateway import FIRST_FRAME, MAX_FRAME_BYTES
from lab.domain.rbac import custom_role
from lab.hypervisor.fake import FakeHypervisor
from lab.services.lab import Lab
from lab.settings import Settings
from tests.unit.fakelab import SHUTDOWN_TIMEOUT, SUBSCRIPTION, new_vm
from tests.unit.securitylab import LiveLab, free_port

V = "?api-version=2024-07-01"
PORT0 = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg1/providers/Microsoft.Compute"
         "/virtualMachines/vm1/providers/Microsoft.SerialConsole/serialPorts/0")  # fmt: skip
VMC = "Virtual Machine Contributor"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, image_cache: Path) -> Iterator[LiveLab]:
    root = tmp_path_factory.mktemp("gateway")
    settings = Settings(data_dir=root / "data", image_cache=image_cache,
                        images_dir=root / "recipes", libvirt_uri="test:///default",
                        accel="qemu", shutdown_timeout=SHUTDOWN_TIMEOUT, replay_bytes=4096,
                        api_port=free_port())  # fmt: skip
    server = LiveLab(Lab(settings, FakeHypervisor())).start(new_vm("vm1"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def api(live: LiveLab) -> Iterator[httpx.Client]:
    tls = ssl.create_default_context(cafile=live.ca)
    with httpx.Client(base_url=live.base, verify=tls, timeout=30) as client:
        yield client


@pytest.fixture(autouse=True)
def nothing_leaks(live: LiveLab) -> Iterator[None]:
    """Every test ends with no gateway session and no console subscriber left behind."""
    assert (live.gateway_sessions(), live.subscribers()) == (0, 0)
    yield
    wait_for(lambda: (live.gateway_sessions(), live.subscribers()) == (0, 0), "baseline",
             live)  # fmt: skip


def wait_for(ok: Callable[[], bool], what: str, live: LiveLab, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached: {live.gateway_sessions()} sessions, "
                                 f"{live.subscribers()} subscribers")  # fmt: skip
        time.sleep(0.02)


def connection_string(api: httpx.Client, token: str) -> str:
    r = api.post(PORT0 + "/connect" + V, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    cs: str = r.json()["connectionString"]
    return cs


def open_ws(cs: str, live: LiveLab, origin: str | None = None,
            no_origin: bool = False) -> websocket.WebSocket:  # fmt: skip
    """A websocket as the Azure CLI's extension opens one (websocket-client: by default it sends
    `Origin: https://<host>:<port>` of the URL)."""
    return websocket.create_connection(cs, sslopt={"ca_certs": live.ca}, timeout=10,
                                       origin=origin, suppress_origin=no_origin)  # fmt: skip


def expect(ws: websocket.WebSocket, needle: str) -> str:
    seen = ""
    while needle not in seen:
        frame = ws.recv()
        seen += frame if isinstance(frame, str) else frame.decode(errors="replace")
    return seen


def closed_with(ws: websocket.WebSocket) -> tuple[int | None, str]:
    """Read until the server closes; return its close code and what it said before."""
    said = ""
    try:
        while True:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return (int.from_bytes(data[:2], "big") if len(data) >= 2 else None), said
            said += data.decode(errors="replace")
    except (websocket.WebSocketConnectionClosedException, OSError):
        return None, said


def logged_in(cs: str, live: LiveLab, token: str, **kw: object) -> websocket.WebSocket:
    ws = open_ws(cs, live, **kw)  # type: ignore[arg-type]
    assert ws.recv() == FIRST_FRAME
    ws.send(token)
    return ws


# -- Origin ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", [None, "https://127.0.0.1:{port}", "HTTPS://127.0.0.1:{port}/"])
def test_no_origin_the_clis_and_the_portals_origin_connect(
    live: LiveLab, api: httpx.Client, origin: str | None
) -> None:
    token = live.token((VMC, "/"))
    cs = connection_string(api, token)
    if origin is None:  # a client that sends no Origin at all (scripts, `websockets`)
        ws = logged_in(cs, live, token, no_origin=True)
    else:
        ws = logged_in(cs, live, token, origin=origin.format(port=live.port))
    with contextlib.closing(ws):
        ws.send(f"hello-{origin}")
        expect(ws, f"hello-{origin}")  # the fake guest echoes it


def test_the_azure_clis_default_origin_is_this_servers(live: LiveLab, api: httpx.Client) -> None:
    token = live.token((VMC, "/"))
    with contextlib.closing(logged_in(connection_string(api, token), live, token)) as ws:
        ws.send("from-websocket-client")
        expect(ws, "from-websocket-client")


@pytest.mark.parametrize("origin", [
    "https://evil.example", "https://127.0.0.1.evil.example", "http://127.0.0.1:{port}",
    "https://127.0.0.1:1", "https://localhost:{port}", "null", "file://",
])  # fmt: skip
def test_foreign_origins_are_refused_before_the_handshake(
    live: LiveLab, api: httpx.Client, origin: str
) -> None:
    token = live.token((VMC, "/"))
    cs = connection_string(api, token)
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        open_ws(cs, live, origin=origin.format(port=live.port))
    assert refused.value.status_code == 403
    body = refused.value.resp_body or b""
    assert b"OriginNotAllowed" in body and b"origin" in body, body
    # The refusal did not use the connection string up: its owner still connects.
    with contextlib.closing(logged_in(cs, live, token)) as ws:
        ws.send("still-mine")
        expect(ws, "still-mine")


# -- abuse ---------------------------------------------------------------------------------------


def test_frames_before_the_token_are_refused(live: LiveLab, api: httpx.Client) -> None:
    token = live.token((VMC, "/"))
    cs = connection_string(api, token)
    with contextlib.closing(open_ws(cs, live)) as ws:
        ws.recv()
        ws.send_binary(b"\x00\xff binary where the token belongs")
        assert closed_with(ws)[0] == 4401
    with contextlib.closing(logged_in(cs, live, token)) as ws:  # no session was claimed
        ws.send("owner")
        expect(ws, "owner")


@pytest.mark.parametrize("garbage", ["", "Bearer", "not-a-token", "x" * 4000, "\x00\x1b[2J"])
def test_wrong_tokens_are_refused(live: LiveLab, api: httpx.Client, garbage: str) -> None:
    token = live.token((VMC, "/"))
    cs = connection_string(api, token)
    with contextlib.closing(logged_in(cs, live, garbage)) as ws:
        code, said = closed_with(ws)
        assert code == 4401 and "token" in said.lower(), (code, said)
    with contextlib.closing(logged_in(cs, live, token)) as ws:  # still its owner's
        ws.send("owner")
        expect(ws, "owner")


def test_another_users_token_and_a_role_without_connect_are_refused(
    live: LiveLab, api: httpx.Client
) -> None:
    cs = connection_string(api, live.token((VMC, "/"), user="alice"))
    with contextlib.closing(logged_in(cs, live, live.token((VMC, "/"), user="mallory"))) as ws:
        code, said = closed_with(ws)
        assert code == 4404 and "not found" in said
    # alice again, but her new token holds only Reader: the websocket checks connect itself.
    with contextlib.closing(logged_in(cs, live, live.token(("Reader", "/"), user="alice"))) as ws:
        code, said = closed_with(ws)
        assert code == 4403 and "serialPorts/connect/action" in said
    # That attempt claimed the session and released it: the string is used up.
    with contextlib.closing(logged_in(cs, live, live.token((VMC, "/"), user="alice"))) as ws:
        code, said = closed_with(ws)
        assert code == 4404 and "already used" in said


def test_a_connection_string_opens_once(live: LiveLab, api: httpx.Client) -> None:
    connect_only = custom_role("Console Connect",
                               ["Microsoft.SerialConsole/serialPorts/connect/action"])  # fmt: skip
    token = live.token((connect_only, "/"))
    cs = connection_string(api, token)
    with contextlib.closing(logged_in(cs, live, token)) as first:
        first.send("first")
        expect(first, "first")
        with contextlib.closing(logged_in(cs, live, token)) as second:
            code, said = closed_with(second)
            assert code == 4404 and "already used" in said
        first.send("first-still-works")
        expect(first, "first-still-works")


def test_garbage_frames_after_login_are_console_input(live: LiveLab, api: httpx.Client) -> None:
    token = live.token((VMC, "/"))
    with contextlib.closing(logged_in(connection_string(api, token), live, token)) as ws:
        for _ in range(50):
            ws.send_binary(os.urandom(256))
        ws.send("\x00\x1b[6n\x1b]0;title\x07")
        ws.send("")
        ws.send_binary(b"")
        ws.send("after-garbage")
        expect(ws, "after-garbage")


def test_huge_frames_close_the_connection(live: LiveLab, api: httpx.Client) -> None:
    token = live.token((VMC, "/"))
    cs = connection_string(api, token)
    with contextlib.closing(logged_in(cs, live, "x" * (MAX_FRAME_BYTES + 1))) as ws:
        # A huge frame as the token: 1009 (message too big), or a reset when the server's
        # close overtakes the rest of the frame (the kernel resets a socket closed unread).
        assert closed_with(ws)[0] in (1009, None)
    with contextlib.closing(logged_in(cs, live, token)) as ws:  # not used up by the refusal
        ws.send("a" * 2048)  # the portal's largest paste still fits
        expect(ws, "a" * 2048)
        with contextlib.suppress(OSError, websocket.WebSocketException):
            ws.send_binary(b"\x00" * (8 * 1024 * 1024))  # the server may close mid-frame
        assert closed_with(ws)[0] in (1009, None)


def test_broken_websocket_framing_closes_cleanly(live: LiveLab, api: httpx.Client) -> None:
    token = live.token((VMC, "/"))
    with contextlib.closing(logged_in(connection_string(api, token), live, token)) as ws:
        ws.send("logged-in")
        expect(ws, "logged-in")
        # Bytes that are no websocket frame: reserved bits and opcode, unmasked.
        ws.sock.sendall(b"\x7f\xff" + os.urandom(64))
        assert closed_with(ws)[0] in (1002, None)  # protocol error, or just closed


def test_a_thousand_connects_in_a_row(live: LiveLab, api: httpx.Client) -> None:
    token = live.token((VMC, "/"))
    started = time.monotonic()
    for i in range(1000):
        with contextlib.closing(logged_in(connection_string(api, token), live, token)) as ws:
            if i % 100 == 0:  # every hundredth: a full round trip through the guest
                ws.send(f"round-{i}")
                expect(ws, f"round-{i}")
    elapsed = time.monotonic() - started
    wait_for(lambda: (live.gateway_sessions(), live.subscribers()) == (0, 0), "baseline", live)
    print(f"\n1,000 gateway connects (connect POST, websocket, token, close) in {elapsed:.1f} s")


def test_a_thousand_unopened_connection_strings_expire(live: LiveLab, api: httpx.Client) -> None:
    token = live.token((VMC, "/"))
    for _ in range(1000):
        connection_string(api, token)
    assert live.gateway_sessions() == 1000
    service = live.lab.serial_console
    real = service.clock
    try:
        service.clock = lambda: real() + 61  # a minute later, the next connect sweeps them
        connection_string(api, token)
        assert live.gateway_sessions() == 1
        service.clock = lambda: real() + 200  # and that one expires too
        connection_string(api, token)
        service.clock = lambda: real() + 400
        service._expire()  # the service's own sweep (no public one; tests only)
        assert live.gateway_sessions() == 0
    finally:
        service.clock = real


def test_a_raw_tls_connection_sending_garbage_is_dropped(live: LiveLab) -> None:
    tls = ssl.create_default_context(cafile=live.ca)
    with (socket.create_connection(("127.0.0.1", live.port), timeout=10) as raw,
          tls.wrap_socket(raw, server_hostname="127.0.0.1") as sock):  # fmt: skip
        sock.sendall(os.urandom(2048) + b"\r\n\r\n")
        answer = b""
        with contextlib.suppress(ssl.SSLError, ConnectionResetError):
            while chunk := sock.recv(4096):
                answer += chunk
    assert answer == b"" or answer.startswith(b"HTTP/1.1 400"), answer[:80]


def test_the_daemons_console_websocket_refuses_every_origin(lab: Lab) -> None:
    """The daemon's socket is no browser's business: a page's handshake (any Origin) is refused
    before the VM is even looked up; the CLI (no Origin) is not."""
    from starlette.testclient import TestClient, WebSocketDenialResponse

    from lab.api.daemon.app import create_app

    with TestClient(create_app(lab)) as client:
        for origin in ("https://evil.example", "null", "http://localhost"):
            with pytest.raises(WebSocketDenialResponse) as refused, client.websocket_connect(
                "/v1/vms/vm1/console", headers={"origin": origin}
            ):
                pass
            assert refused.value.status_code == 403
            assert refused.value.json()["error"]["code"] == "OriginNotAllowed"
        # No Origin: the request goes on to the VM lookup (there is no vm1 here: a 404 said
        # in the lab's own framing, on an accepted socket).
        with client.websocket_connect("/v1/vms/vm1/console") as ws:
            assert ws.receive_json()["code"] == "ResourceNotFound"
