"""The test-host helper itself (`tests/integration/testhosts.py`): two extra libvirt hosts in
their own network and mount namespaces answer over `qemu+tcp://`, each hides its data dir
from the front, a killed libvirtd comes back in the same namespaces, and `stop()` leaves
nothing behind (no netns, veth, process or data-dir mountpoint). No guest boots here.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.integration import testhosts
from tests.integration.testhosts import TestHost, TestHostError, test_hosts

pytestmark = pytest.mark.integration


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def _assert_gone(hosts: list[TestHost], pids: list[int]) -> None:
    netns, links = _netns(), _links()
    for h in hosts:
        assert h.netns not in netns
        assert h.veth_host not in links and h.veth_ns not in links
        assert not h.data_dir.exists()
    assert [p for p in pids if testhosts._alive(p)] == []


def test_two_hosts_answer_hide_their_data_and_survive_a_libvirtd_kill(tmp_path: Path) -> None:
    t0 = time.monotonic()
    with test_hosts(2, tmp_path) as hosts:
        made = time.monotonic() - t0
        h1, h2 = hosts
        assert (h1.address, h2.address) == ("10.213.0.2", "10.213.0.6")
        assert h1.uri == "qemu+tcp://10.213.0.2/system"
        for h in hosts:
            assert "CPU(s):" in h.virsh("nodeinfo"), h.name

        # The data dir: the path exists in both mount namespaces, the files only in the host's.
        probe = h1.data_dir / "probe.txt"
        h1.run("sh", "-c", f"echo from-h1 > {probe}")
        assert h1.run("cat", str(probe)) == "from-h1\n"
        assert h1.data_dir.is_dir() and not probe.exists()
        assert list(h1.data_dir.iterdir()) == []
        assert h2.run("ls", "-A", str(h1.data_dir)) == ""
        assert (h1.private_data / "probe.txt").read_text() == "from-h1\n"
        # ... and both daemons of h1 see it (virtlogd writes the serial logs there).
        daemons = {testhosts._comm(p): p for p in h1.pids()}
        for comm in ("libvirtd", "virtlogd"):
            assert Path(f"/proc/{daemons[comm]}/root{probe}").read_text() == "from-h1\n", comm

        # A killed libvirtd comes back in the same namespaces.
        old = h1.libvirtd_pid()
        h1.kill_libvirtd()
        assert h1.libvirtd_pid() is None and not h1.answers()
        assert h2.answers()
        h1.start_libvirtd()
        assert h1.libvirtd_pid() not in (None, old)
        assert "CPU(s):" in h1.virsh("nodeinfo")
        assert h1.run("cat", str(probe)) == "from-h1\n"
        pids = h1.pids() + h2.pids()
        assert len(pids) >= 6
    _assert_gone(hosts, pids)
    h1.stop()  # idempotent
    print(f"make_hosts(2): {made:.2f} s")


def test_a_failed_setup_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = testhosts._start_daemons
    made: list[TestHost] = []

    def start_or_fail(h: TestHost) -> None:
        made.append(h)
        if h.name == "h2":
            raise TestHostError("h2: made to fail")
        real(h)

    monkeypatch.setattr(testhosts, "_start_daemons", start_or_fail)
    with pytest.raises(TestHostError, match="made to fail"), test_hosts(2, tmp_path):
        pass
    assert [h.name for h in made] == ["h1", "h2"]
    _assert_gone(made, [])
