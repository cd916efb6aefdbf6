"""Extra libvirt "hosts" on this one machine, for multi-host tests.

Each host is a libvirtd + virtlogd pair in its own network namespace and a private mount
namespace (its own /run, /etc/libvirt, /var/lib/libvirt, /var/log/libvirt, /var/cache/libvirt),
reached over `qemu+tcp://ADDRESS/system` (`uri`) or `qemu+ssh://root@ADDRESS/system` (`ssh_uri`:
an sshd of the host's own in its namespaces, with a host key and a client key made for the run,
and the host key pinned in a known_hosts file of the run's, so nothing of the machine's own ssh
setup is read or written). The recipe and its pitfalls are in
/work/shared/reference/test-hosts.md.

Addresses: host i (0-based) gets the /30 10.213.0.4i/30: 10.213.0.{4i+1} on the main side of
its veth pair, 10.213.0.{4i+2} inside its namespace. Traffic goes only there and to loopback.

Every host has a `data_dir` (for images, overlays, serial logs) whose path exists in both mount
namespaces, but inside the host's namespace a private directory (`host_dir/data`) is
bind-mounted over it: the host's QEMU and virtlogd see the host's files, the front (the main
mount namespace, its libvirtd, the lab daemon) sees an empty directory. A test that reads a
remote host's serial log can only do it the remote way.

Names carry the prefix `sclh` and the pid of the run that made them (`sclh1-<pid>`, veths
`sclh1-<pid>h` / `sclh1-<pid>n`, data dirs `/var/lib/scl-testhost-h1-<pid>`), so that
`sweep_stale_test_hosts()` can tell what a killed earlier run left behind.

    with test_hosts(2, tmp_path) as (h1, h2):
        subprocess.run(["virsh", "-c", h1.uri, "define", xml_file], check=True)
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "sclh"
SUBNET = "10.213.0."
MAX_HOSTS = 64  # 10.213.0.0/24 cut into /30s
DATA_DIR_PARENT = Path("/var/lib")
DATA_DIR_PREFIX = "scl-testhost-"
READY_TIMEOUT = 30.0
#: The test hosts' sshd (package openssh-server; the machine's own ssh service stays off).
SSHD = "/usr/sbin/sshd"

_NETNS_RE = re.compile(rf"^{PREFIX}(\d+)-(\d+)$")
_VETH_RE = re.compile(rf"^{PREFIX}(\d+)-(\d+)[hn]$")
_DATA_DIR_RE = re.compile(rf"^{DATA_DIR_PREFIX}h(\d+)-(\d+)$")

#: The daemons get a clean environment: nothing of the test's LIBVIRT_* or proxy settings.
_DAEMON_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C"}

_LIBVIRTD_CONF = """
# scl test host: plain TCP, no auth, inside this host's own network namespace only
listen_tls = 0
listen_tcp = 1
auth_tcp = "none"
"""


class TestHostError(RuntimeError):
    """A test host could not be made or did not answer."""

    __test__ = False


@dataclass
class TestHost:
    __test__ = False  # not a pytest test class, despite the name

    name: str
    netns: str
    address: str
    host_dir: Path
    data_dir: Path
    #: The 10.213.0.x of the main side of the veth pair.
    peer_address: str = ""
    #: The long-lived `sleep infinity` that holds the host's mount namespace (nsenter target).
    anchor: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    stopped: bool = False

    @property
    def uri(self) -> str:
        return f"qemu+tcp://{self.address}/system"

    @property
    def ssh_uri(self) -> str:
        """The host over ssh, as a real second machine is added: libvirt's ssh transport runs
        `ssh` (here a wrapper that pins the run's known_hosts) and, on the host, libvirt's
        `virt-ssh-helper` on the host's own libvirtd socket."""
        if not (self.ssh_dir / "sshd.pid").exists():
            raise TestHostError(f"test host {self.name}: no sshd runs (is openssh-server "
                                "installed? `make setup` installs it)")  # fmt: skip
        return (f"qemu+ssh://root@{self.address}/system?keyfile={self.ssh_dir / 'client_key'}"
                f"&command={self.ssh_dir / 'ssh'}")  # fmt: skip

    @property
    def ssh_dir(self) -> Path:
        return self.host_dir / "ssh"

    @property
    def veth_host(self) -> str:
        return f"{self.netns}h"

    @property
    def veth_ns(self) -> str:
        return f"{self.netns}n"

    @property
    def private_data(self) -> Path:
        """Where `data_dir`'s files of this host really are (readable after `stop()` too)."""
        return self.host_dir / "data"

    @property
    def anchor_pid(self) -> int:
        if self.anchor is None:
            raise TestHostError(f"test host {self.name}: not started")
        return self.anchor.pid

    def nsenter(self, *argv: str) -> list[str]:
        """`argv` run inside this host's network and mount namespaces."""
        return ["nsenter", "-t", str(self.anchor_pid), "-m", "-n", *argv]

    def run(self, *argv: str, timeout: float = 30, check: bool = True) -> str:
        """Run `argv` inside the host's namespaces and return its stdout."""
        p = subprocess.run(self.nsenter(*argv), capture_output=True, text=True,
                           timeout=timeout, env=_DAEMON_ENV)  # fmt: skip
        if check and p.returncode != 0:
            raise TestHostError(f"test host {self.name}: {shlex.join(argv)} failed "
                                f"({p.returncode}): {p.stderr.strip()}")  # fmt: skip
        return p.stdout

    def virsh(self, *args: str, timeout: float = 30, check: bool = True) -> str:
        """`virsh -c URI ARGS` from the front (over TCP)."""
        p = subprocess.run(["virsh", "-c", self.uri, *args], capture_output=True, text=True,
                           timeout=timeout)  # fmt: skip
        if check and p.returncode != 0:
            raise TestHostError(f"test host {self.name}: virsh {shlex.join(args)} failed: "
                                f"{p.stderr.strip()}")  # fmt: skip
        return p.stdout

    def pids(self) -> list[int]:
        """The live processes in the host's network namespace (daemons, sleep, QEMU)."""
        return _netns_pids(self.netns)

    def libvirtd_pid(self) -> int | None:
        for pid in self.pids():
            if _comm(pid) == "libvirtd":
                return pid
        return None

    def answers(self, timeout: float = 5) -> bool:
        try:
            p = subprocess.run(["virsh", "-c", self.uri, "list"], capture_output=True,
                               timeout=timeout)  # fmt: skip
        except subprocess.TimeoutExpired:
            return False
        return p.returncode == 0

    def wait_until_answers(self, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.anchor is not None and self.anchor.poll() is not None:
                raise TestHostError(
                    f"test host {self.name} ({self.netns}): its namespace setup exited with "
                    f"{self.anchor.returncode}: {self._setup_log()}"
                )
            if self.answers(timeout=max(1.0, min(5.0, deadline - time.monotonic()))):
                return
            if time.monotonic() >= deadline:
                raise TestHostError(
                    f"test host {self.name}: {self.uri} did not answer `virsh list` within "
                    f"{timeout:.0f} s (libvirtd pid {self.libvirtd_pid()}); "
                    f"setup log: {self._setup_log()}"
                )
            time.sleep(0.1)

    def kill_libvirtd(self) -> None:
        """SIGKILL the host's libvirtd (its virtlogd and guests keep running)."""
        pid = self.libvirtd_pid()
        if pid is None:
            raise TestHostError(f"test host {self.name}: no libvirtd runs")
        os.kill(pid, signal.SIGKILL)
        # Until it is reaped, not only dead: its console lock files (/run/lock/LCK..pts_N) name
        # its pid, and libvirt takes a zombie's pid for a live holder. A real host's init reaps
        # at once; this machine's PID 1 takes up to about 2 s, and a libvirtd started again
        # meanwhile refused to open the guest's console ("is locked by lock file").
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    def start_libvirtd(self) -> None:
        """Start libvirtd again in the host's namespaces; return once the URI answers."""
        if self.libvirtd_pid() is not None:
            raise TestHostError(f"test host {self.name}: libvirtd already runs")
        p = subprocess.run(self.nsenter("/usr/sbin/libvirtd", "-d", "--listen"),
                           capture_output=True, text=True, timeout=30,
                           env=_DAEMON_ENV)  # fmt: skip
        if p.returncode != 0:
            raise TestHostError(f"test host {self.name}: libvirtd did not start: "
                                f"{p.stderr.strip()}")  # fmt: skip
        self.wait_until_answers()

    def stop(self) -> None:
        """Destroy and undefine the host's domains, end its processes (by pid), delete its
        netns and veth, remove its (empty) data-dir mountpoint. Idempotent; never raises."""
        if self.stopped:
            return
        with contextlib.suppress(Exception):
            if self.libvirtd_pid() is not None:
                for dom in self.virsh("list", "--all", "--name", timeout=10).split():
                    self.virsh("destroy", dom, timeout=20, check=False)
                    self.virsh("undefine", dom, "--nvram", timeout=10, check=False)
        with contextlib.suppress(Exception):
            _end_netns_processes(self.netns)
        if self.anchor is not None:
            with contextlib.suppress(Exception):
                self.anchor.kill()
            with contextlib.suppress(Exception):
                self.anchor.wait(timeout=10)
        with contextlib.suppress(Exception):
            _ip("link", "del", self.veth_host, check=False)
        with contextlib.suppress(Exception):
            _ip("netns", "del", self.netns, check=False)
        with contextlib.suppress(Exception):
            self.data_dir.rmdir()
        self.stopped = True

    def _setup_log(self) -> str:
        try:
            return (self.host_dir / "setup.log").read_text(errors="replace").strip()[-2000:]
        except OSError:
            return "(no setup log)"


# ----------------------------------------------------------------------------- public API


def make_hosts(n: int, base_dir: Path, *, from_top: bool = False) -> list[TestHost]:
    """Make `n` test hosts under `base_dir` and wait until each URI answers `virsh list`.

    The hosts take address slots 1..n, and refuse to start on a slot in use; `from_top`: the
    highest free slots instead (a bench, so that a concurrent test run keeps its slots). They
    are named h1..hn either way. On failure the hosts made so far are stopped before the error
    is raised. Leftovers of a killed earlier run are swept first (their 10.213.0.x addresses
    would clash)."""
    hosts: list[TestHost] = []
    try:
        _start_hosts(n, Path(base_dir), hosts, from_top)
        for h in hosts:
            h.wait_until_answers()
    except BaseException:
        for h in hosts:
            h.stop()
        raise
    return hosts


@contextlib.contextmanager
def test_hosts(n: int, base_dir: Path) -> Iterator[list[TestHost]]:
    """`make_hosts(n, base_dir)`, and `stop()` every host on the way out, whatever happens."""
    hosts = make_hosts(n, base_dir)
    try:
        yield hosts
    finally:
        for h in hosts:
            h.stop()


test_hosts.__test__ = False  # type: ignore[attr-defined]


def sweep_stale_test_hosts() -> None:
    """Remove the netns, veths, processes and data-dir mountpoints named with this helper's
    prefix whose owning run (the pid in the name) is gone."""
    for ns in _netns_list():
        m = _NETNS_RE.match(ns)
        if m and not _alive(int(m.group(2))):
            with contextlib.suppress(Exception):
                _end_netns_processes(ns)
            with contextlib.suppress(Exception):
                _ip("netns", "del", ns, check=False)
    for link in _links():
        m = _VETH_RE.match(link)
        if m and not _alive(int(m.group(2))):
            with contextlib.suppress(Exception):
                _ip("link", "del", link, check=False)
    with contextlib.suppress(OSError):
        for d in DATA_DIR_PARENT.iterdir():
            m = _DATA_DIR_RE.match(d.name)
            if m and not _alive(int(m.group(2))):
                with contextlib.suppress(OSError):
                    d.rmdir()


# ----------------------------------------------------------------------------- internals


def _start_hosts(n: int, base_dir: Path, hosts: list[TestHost], from_top: bool) -> None:
    if not 1 <= n <= MAX_HOSTS:
        raise ValueError(f"n must be 1..{MAX_HOSTS}, not {n}")
    for tool in ("ip", "unshare", "nsenter", "virsh"):
        if shutil.which(tool) is None:
            raise TestHostError(f"test hosts need `{tool}`")
    sweep_stale_test_hosts()
    pid = os.getpid()
    in_use = _addresses_in_use()
    for slot in range(MAX_HOSTS, 0, -1) if from_top else range(1, n + 1):
        if len(hosts) == n:
            break
        name = f"h{len(hosts) + 1}"
        netns = f"{PREFIX}{slot}-{pid}"
        host = TestHost(
            name=name,
            netns=netns,
            address=f"{SUBNET}{4 * slot - 2}",
            peer_address=f"{SUBNET}{4 * slot - 3}",
            host_dir=base_dir / f"testhost-{name}",
            data_dir=DATA_DIR_PARENT / f"{DATA_DIR_PREFIX}h{slot}-{pid}",
        )
        if host.peer_address in in_use or netns in _netns_list():
            if from_top:
                continue
            raise TestHostError(
                f"test host {name}: {host.peer_address} or netns {netns} is already in use "
                "(another run of the test hosts?)"
            )
        hosts.append(host)
        _prepare_dirs(host)
        _make_network(host)
        _start_daemons(host)
    if len(hosts) < n:
        raise TestHostError(f"no {n} free test-host slots in {SUBNET}0/24")


def _prepare_dirs(h: TestHost) -> None:
    for sub in ("lib", "log", "etc", "cache", "data"):
        (h.host_dir / sub).mkdir(parents=True, exist_ok=True)
    etc = h.host_dir / "etc"
    subprocess.run(["cp", "-a", "/etc/libvirt/.", f"{etc}/"], check=True)
    # The copy must not carry the real host's domains, storage pools or autostarted networks.
    for pattern in ("qemu/*.xml", "qemu/autostart/*", "qemu/networks/autostart/*",
                    "storage/*.xml", "storage/autostart/*"):  # fmt: skip
        for f in etc.glob(pattern):
            f.unlink()
    with (etc / "libvirtd.conf").open("a") as conf:
        conf.write(_LIBVIRTD_CONF)
    # The QEMU capabilities cache: libvirtd checks each entry against the binaries, kernel and
    # microcode, so a copy is safe, and it spares every new host ~4 s of QEMU probing on its
    # first define.
    if Path("/var/cache/libvirt/qemu/capabilities").is_dir():
        subprocess.run(["cp", "-a", "/var/cache/libvirt/.", f"{h.host_dir / 'cache'}/"],
                       check=True)  # fmt: skip
    if Path(SSHD).exists():
        _prepare_ssh(h)
    h.data_dir.mkdir(mode=0o755)
    h.data_dir.chmod(0o755)
    h.private_data.chmod(0o755)


def _prepare_ssh(h: TestHost) -> None:
    """Keys, the sshd's config, and the front's side: a known_hosts with the host's key and an
    `ssh` wrapper that reads only that (libvirt's `command=`: its ssh transport has no
    known_hosts parameter of its own)."""
    d = h.ssh_dir
    d.mkdir(mode=0o700)
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"scl-{h.name}",
                        "-f", str(d / key)], check=True, capture_output=True)  # fmt: skip
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    host_key = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"{h.address} {host_key[0]} {host_key[1]}\n")
    (d / "sshd_config").write_text(f"""ListenAddress {h.address}
HostKey {d / "host_key"}
PidFile {d / "sshd.pid"}
AuthorizedKeysFile {d / "authorized_keys"}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
""")
    wrapper = d / "ssh"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"exec /usr/bin/ssh -F /dev/null -o UserKnownHostsFile={d / 'known_hosts'} "
        "-o StrictHostKeyChecking=yes -o BatchMode=yes -o IdentitiesOnly=yes \"$@\"\n"
    )
    wrapper.chmod(0o700)


def _make_network(h: TestHost) -> None:
    _ip("netns", "add", h.netns)
    _ip("link", "add", h.veth_host, "type", "veth", "peer", "name", h.veth_ns)
    _ip("link", "set", h.veth_ns, "netns", h.netns)
    _ip("addr", "add", f"{h.peer_address}/30", "dev", h.veth_host)
    _ip("link", "set", h.veth_host, "up")
    _ip("-n", h.netns, "addr", "add", f"{h.address}/30", "dev", h.veth_ns)
    _ip("-n", h.netns, "link", "set", h.veth_ns, "up")
    _ip("-n", h.netns, "link", "set", "lo", "up")


def _start_daemons(h: TestHost) -> None:
    q = shlex.quote
    d = h.host_dir
    script = f"""set -e
mount -t tmpfs tmpfs /run
mkdir -p /run/libvirt /run/lock
mount --bind {q(str(d / "lib"))} /var/lib/libvirt
mount --bind {q(str(d / "log"))} /var/log/libvirt
mount --bind {q(str(d / "etc"))} /etc/libvirt
mount --bind {q(str(d / "cache"))} /var/cache/libvirt
mount --bind {q(str(h.private_data))} {q(str(h.data_dir))}
/usr/sbin/virtlogd -d
/usr/sbin/libvirtd -d --listen
{_sshd_line(h)}
exec sleep infinity
"""
    with (d / "setup.log").open("wb") as log:
        h.anchor = subprocess.Popen(
            ["ip", "netns", "exec", h.netns,
             "unshare", "-m", "--propagation", "private", "sh", "-c", script],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=_DAEMON_ENV, start_new_session=True,
        )  # fmt: skip
    # `ip netns exec`, `unshare` and `sh` each exec the next: the Popen's pid ends up being
    # `sleep infinity`, in the host's mount namespace once the mounts are done. nsenter needs
    # that namespace, not the one `ip netns exec` made on the way.
    deadline = time.monotonic() + READY_TIMEOUT
    while _comm(h.anchor.pid) != "sleep":
        if h.anchor.poll() is not None:
            raise TestHostError(f"test host {h.name} ({h.netns}): namespace setup failed "
                                f"({h.anchor.returncode}): {h._setup_log()}")  # fmt: skip
        if time.monotonic() > deadline:
            raise TestHostError(f"test host {h.name}: namespace setup hangs: {h._setup_log()}")
        time.sleep(0.02)


def _sshd_line(h: TestHost) -> str:
    if not (h.ssh_dir / "sshd_config").exists():
        return ""
    q = shlex.quote
    config, log = q(str(h.ssh_dir / "sshd_config")), q(str(h.ssh_dir / "sshd.log"))
    return f"mkdir -p /run/sshd && {SSHD} -f {config} -E {log}"


def _ip(*args: str, check: bool = True) -> str:
    p = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and p.returncode != 0:
        raise TestHostError(f"ip {shlex.join(args)}: {p.stderr.strip()}")
    return p.stdout


def _netns_list() -> list[str]:
    return [line.split()[0] for line in _ip("netns", "list", check=False).splitlines()
            if line.strip()]  # fmt: skip


def _links() -> list[str]:
    out = _ip("-o", "link", "show", check=False)
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def _addresses_in_use() -> set[str]:
    out = _ip("-o", "-4", "addr", "show", check=False)
    return {m.group(1) for m in re.finditer(r"inet (\d+\.\d+\.\d+\.\d+)/", out)}


def _netns_pids(netns: str) -> list[int]:
    out = _ip("netns", "pids", netns, check=False)
    own = os.getpid()
    return [int(p) for p in out.split() if p.isdigit() and int(p) != own]


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _end_netns_processes(netns: str) -> None:
    """SIGKILL every process in `netns`, by pid, until none is left (QEMU, the daemons)."""
    for _ in range(5):
        pids = _netns_pids(netns)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _wait_gone(pids, 5)
