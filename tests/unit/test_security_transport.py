"""Transport and secrets: the Azure-compatible API, served with `lab serve`'s own TLS config,
refuses TLS 1.0, TLS 1.1 and plain HTTP; the lab's secrets are 0600 files in a 0700 directory.

The old-version tests drive the TLS handshake by hand (a memory BIO): they check that the
client really offered the old version (so a refusal cannot come from the client's own OpenSSL
policy) and that the server answered with a `protocol_version` alert."""

from __future__ import annotations

import os
import socket
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from lab.api.security.tls import ensure_certificates
from lab.api.security.tokens import signing_key
from lab.cli.main import cli
from lab.hypervisor.fake import FakeHypervisor
from lab.services.lab import Lab
from lab.settings import Settings, get_settings
from tests.unit.securitylab import LiveLab, free_port

HANDSHAKE, ALERT = 0x16, 0x15
PROTOCOL_VERSION_ALERT = 70
WIRE_VERSION = {
    ssl.TLSVersion.TLSv1: b"\x03\x01",
    ssl.TLSVersion.TLSv1_1: b"\x03\x02",
    ssl.TLSVersion.TLSv1_2: b"\x03\x03",
}


def lab_settings(root: Path, image_cache: Path) -> Settings:
    return Settings(data_dir=root / "data", image_cache=image_cache, images_dir=root / "recipes",
                    libvirt_uri="test:///default", accel="qemu", api_port=free_port())  # fmt: skip


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, image_cache: Path) -> Iterator[LiveLab]:
    settings = lab_settings(tmp_path_factory.mktemp("tls"), image_cache)
    server = LiveLab(Lab(settings, FakeHypervisor())).start()
    try:
        yield server
    finally:
        server.stop()


def handshake(port: int, version: ssl.TLSVersion) -> tuple[bytes, bytes]:
    """Offer exactly `version` to the server; return (our ClientHello, the server's answer)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # else OpenSSL may not offer TLS 1.0/1.1 at all
    ctx.minimum_version = ctx.maximum_version = version
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(hello)
        answer = b""
        while len(answer) < 7:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    return hello, answer


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_tls_versions_are_refused_by_the_server(live: LiveLab, version: ssl.TLSVersion) -> None:
    hello, answer = handshake(live.port, version)
    # The client did offer the old version: a ClientHello whose highest version is `version`.
    assert hello[0] == HANDSHAKE and hello[5] == 0x01  # a handshake record holding ClientHello
    assert hello[9:11] == WIRE_VERSION[version], hello[:16].hex()
    # The server refused it: no ServerHello, but a fatal protocol_version alert or, as asyncio's
    # TLS transport does when the handshake fails, the connection closed without a word.
    if answer:
        assert answer[:1] == bytes([ALERT]), answer[:16].hex()
        assert answer[5:7] == bytes([2, PROTOCOL_VERSION_ALERT]), answer[:16].hex()


def test_tls_1_2_is_accepted_with_the_same_client_code(live: LiveLab) -> None:
    hello, answer = handshake(live.port, ssl.TLSVersion.TLSv1_2)
    assert hello[9:11] == WIRE_VERSION[ssl.TLSVersion.TLSv1_2]
    assert answer[0] == HANDSHAKE and answer[5] == 0x02  # ServerHello


def test_plain_http_gets_no_http_answer(live: LiveLab) -> None:
    with socket.create_connection(("127.0.0.1", live.port), timeout=10) as sock:
        sock.sendall(b"GET /subscriptions?api-version=2022-12-01 HTTP/1.1\r\n"
                     b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n")  # fmt: skip
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert not answer.startswith(b"HTTP/"), answer[:80]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{live.port}/openapi.json", timeout=10)
    # ... while HTTPS with the lab's CA answers.
    ok = httpx.get(f"{live.base}/openapi.json", verify=ssl.create_default_context(cafile=live.ca))
    assert ok.status_code == 200


SECRETS = ("ca-key.pem", "server-key.pem", "token-signing.key", "storage-signing.key")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_on_a_fresh_data_dir_are_private(live: LiveLab) -> None:
    """What `lab serve` made on its first start: the keys 0600, their directory 0700."""
    tls = live.lab.settings.tls_dir
    assert mode(tls) == 0o700, oct(mode(tls))
    for name in SECRETS:
        assert mode(tls / name) == 0o600, f"{name}: {oct(mode(tls / name))}"
    assert (tls / "ca.pem").exists()  # the public CA certificate is there too


def test_lab_token_on_a_fresh_data_dir_makes_a_private_key(tmp_path: Path) -> None:
    os.umask(old := os.umask(0o022))  # the usual umask: 0644 files, 0755 directories
    data = tmp_path / "fresh"
    get_settings.cache_clear()  # `lab` reads LAB_DATA_DIR once per process
    result = CliRunner().invoke(cli, ["token", "--role", "Reader"],
                                env={"LAB_DATA_DIR": str(data)})  # fmt: skip
    get_settings.cache_clear()  # no later test sees this data dir
    assert result.exit_code == 0, result.output
    assert mode(data / "tls") == 0o700
    assert mode(data / "tls" / "token-signing.key") == 0o600
    assert old is not None


def test_loosened_secrets_are_tightened_when_next_used(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    ensure_certificates(tls)
    signing_key(tls / "token-signing.key")
    os.chmod(tls, 0o755)
    for name in ("ca-key.pem", "server-key.pem", "token-signing.key"):
        os.chmod(tls / name, 0o644)
    ensure_certificates(tls)
    signing_key(tls / "token-signing.key")
    assert mode(tls) == 0o700
    for name in ("ca-key.pem", "server-key.pem", "token-signing.key"):
        assert mode(tls / name) == 0o600, name
