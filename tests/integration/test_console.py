"""The console broker with real guests: fan-out, stalled viewers, replay, takeover, SysRq, NMI,
the Python API, a daemon killed mid-output, the idle timeout and the audit log."""

from __future__ import annotations

import contextlib
import json
import re
import signal
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from lab.client import connect
from lab.console.broker import SLOW_NOTICE, TAKEOVER_NOTICE
from tests.integration.labharness import LabHarness, WsConsole

pytestmark = pytest.mark.integration


def _collect(
    conn: ClientConnection, sink: bytearray, controls: list[str], stop: threading.Event
) -> None:
    while not stop.is_set():
        try:
            message = conn.recv(timeout=0.2)
        except TimeoutError:
            continue
        except Exception:
            return
        if isinstance(message, bytes):
            sink.extend(message)
        else:
            controls.append(message)


def test_viewers_see_identical_bytes_and_a_stalled_one_is_dropped(it_lab: LabHarness) -> None:
    session = connect("it1", settings=it_lab.settings, timeout=60)
    session.login("azureuser", "Passw0rd!")
    stop = threading.Event()
    sinks = [bytearray(), bytearray()]
    controls: list[list[str]] = [[], []]
    with it_lab.client.console("it1", mode="view", replay=0) as v1, \
            it_lab.client.console("it1", mode="view", replay=0) as v2, \
            it_lab.client.console("it1", mode="view", replay=0) as stalled:  # fmt: skip
        threads = [
            threading.Thread(target=_collect, args=(c, sinks[i], controls[i], stop))
            for i, c in enumerate((v1, v2))
        ]
        for t in threads:
            t.start()
        start = it_lab.log_size("it1")
        # About 600 KB of output, more than the 256 KiB a viewer may fall behind, printed in the
        # background so that the interactive session (and its idle timer) is not involved.
        session.run("(seq 1 100000; echo SEQ-''DONE) > /dev/ttyS0 &")
        session.close()
        it_lab.wait_for_log("it1", rb"SEQ-DONE", start=start, timeout=300)
        with connect("it1", settings=it_lab.settings, timeout=60) as again:
            again.wait_for_login()  # logs the shell out: leave the console as we found it
        end = it_lab.log_size("it1")
        deadline = time.monotonic() + 30
        while min(len(s) for s in sinks) < end - start and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join()
        log = it_lab.boot_log("it1", start)[: end - start]
        assert b"\n100000\r\n" in log
        # Both live viewers got every byte of the window, identical to the log.
        assert bytes(sinks[0][: end - start]) == log
        assert bytes(sinks[1][: end - start]) == log
        # The viewer that never read was dropped with a notice; it did not slow anyone down.
        notices = []
        while True:
            try:
                message = stalled.recv(timeout=5)
            except Exception:
                break
            if isinstance(message, str):
                notices.append(json.loads(message))
        assert {"type": "closed", "reason": SLOW_NOTICE} in notices


def test_late_viewer_gets_replay_then_live(it_lab: LabHarness) -> None:
    size = it_lab.log_size("it1")
    with it_lab.client.console("it1", mode="view", replay=500) as late:
        first = late.recv(timeout=10)
        assert first == it_lab.boot_log("it1", size - 500)[:500]
        # Then live: bytes the guest prints only now, after the viewer connected, come on the
        # same connection, and they continue the log exactly where the replay ended.
        it_lab.cli("sysrq", "it1", "h")
        live = bytearray()
        deadline = time.monotonic() + 30
        while b"sysrq: HELP" not in live:
            assert time.monotonic() < deadline, f"no live output after the replay: {bytes(live)!r}"
            with contextlib.suppress(TimeoutError):
                message = late.recv(timeout=1)
                if isinstance(message, bytes):
                    live.extend(message)
        assert bytes(live) == it_lab.boot_log("it1", size)[: len(live)]


def test_interactive_takeover_keeps_the_guest_session(it_lab: LabHarness) -> None:
    first = connect("it2", settings=it_lab.settings, timeout=60, user="alice")
    first.login("azureuser", "Passw0rd!")
    first.run("export MARK=still-logged-in")
    second = connect("it2", settings=it_lab.settings, timeout=60, user="bob")
    # The first session is closed with Azure's notice ...
    with pytest.raises(Exception, match=TAKEOVER_NOTICE):
        first.expect("never printed", timeout=10)
    assert first.closed_reason == TAKEOVER_NOTICE
    # ... and the second continues the same shell: no login, the variable is still set.
    output, status = second.run("echo $MARK")
    assert (output.strip(), status) == ("still-logged-in", 0)
    second.sendline("exit")
    second.close()
    audit = [e for e in it_lab.client.json("GET", "/v1/audit") if e["vm"] == "it2"]
    takeovers = [e for e in audit if e["event"] == "takeover"]
    assert takeovers and takeovers[-1]["user"] == "bob"
    assert takeovers[-1]["displaced_user"] == "alice"


@pytest.mark.parametrize("method", ["sendkey", "break"])
def test_sysrq_help_by_both_methods(it_lab: LabHarness, method: str) -> None:
    start = it_lab.log_size("it1")
    it_lab.cli("sysrq", "it1", "h", "--method", method)
    log = it_lab.wait_for_log("it1", rb"sysrq: HELP : loglevel\(0-9\)", start=start, timeout=15)
    assert b"reboot(b)" in log


def test_sysrq_refused_when_not_running_and_bad_keys(it_lab: LabHarness) -> None:
    bad = it_lab.cli("sysrq", "it1", "h!", check=False)
    assert bad.returncode == 2 and "not SysRq keys" in bad.stderr
    # A stopped VM: the lab refuses (409 OperationNotAllowed, the CLI's exit 4), and nothing
    # reaches the guest. it3 is started again and back at its prompt for the tests after this.
    it_lab.cli("vm", "stop", "it3", "--skip-shutdown")
    try:
        assert it_lab.vm("it3")["powerState"] == "stopped"
        refused = it_lab.cli("sysrq", "it3", "h", check=False)
        assert refused.returncode == 4, refused
        assert "OperationNotAllowed" in refused.stderr, refused.stderr
        assert "'sysrq' is not allowed on VM 'it3' while it is stopped" in refused.stderr
    finally:
        start = it_lab.log_size("it3")
        it_lab.cli("vm", "start", "it3")
        it_lab.wait_for_log("it3", rb"it3 login: ", start=start, timeout=120)


def test_nmi_reaches_the_kernel_and_panics_with_unknown_nmi_panic(it_lab: LabHarness) -> None:
    start1 = it_lab.log_size("it1")
    it_lab.cli("nmi", "it1", "--yes")
    it_lab.wait_for_log("it1", rb"NMI received for unknown reason", start=start1, timeout=15)
    start3 = it_lab.log_size("it3")
    it_lab.cli("nmi", "it3", "--yes")
    log = it_lab.wait_for_log("it3", rb"Kernel panic - not syncing: NMI", start=start3, timeout=15)
    # panic=-1 reboots at once: the VM boots again to a login prompt.
    assert log
    it_lab.wait_for_log("it3", rb"it3 login: ", start=start3, timeout=120)


def test_run_returns_the_exit_status_100_times(it_lab: LabHarness) -> None:
    with connect("it2", settings=it_lab.settings, timeout=60) as console:
        console.login("azureuser", "Passw0rd!")
        results = [console.run(cmd)[1] for cmd in ("true", "false") * 50]
        assert results == [0, 1] * 50
        output, status = console.run("echo one; echo two >&2; exit_code() { return 7; }; exit_code")
        assert (output, status) == ("one\ntwo\n", 7)
        console.sendline("exit")


def test_daemon_killed_while_the_guest_prints_loses_nothing(it_lab: LabHarness) -> None:
    with connect("it2", settings=it_lab.settings, timeout=60) as console:
        console.login("azureuser", "Passw0rd!")
        start = it_lab.log_size("it2")
        console.sendline("(i=0; while [ $i -lt 1500 ]; do i=$((i+1)); echo CNT $i; usleep 3000; "
                         "done) > /dev/ttyS0 &")  # fmt: skip
        it_lab.wait_for_log("it2", rb"CNT 100\r\n", start=start, timeout=30)
    it_lab.kill_daemon(signal.SIGKILL)
    time.sleep(1.0)  # the guest keeps printing with no lab process: virtlogd keeps the log
    it_lab.start_daemon()
    log = it_lab.wait_for_log("it2", rb"CNT 1500\r\n", start=start, timeout=120)
    # Unanchored: "CNT 1" may follow the shell prompt on its line; the echoed command shows "$i".
    numbers = [int(n) for n in re.findall(rb"CNT (\d+)\r?\n", log)]
    assert numbers == list(range(1, 1501))
    with connect("it2", settings=it_lab.settings, timeout=60) as console:
        console.login("azureuser", "Passw0rd!")  # the new daemon's broker has the keyboard
        console.sendline("exit")


def test_idle_interactive_session_is_closed(it_lab: LabHarness) -> None:
    with it_lab.client.console("it1", replay=0) as conn:
        c = WsConsole(conn)
        deadline = time.monotonic() + 60
        while not c.controls and time.monotonic() < deadline:
            with contextlib.suppress(AssertionError, ConnectionClosed):
                c.expect(rb"never printed", timeout=1)
        closed = [json.loads(m) for m in c.controls]
        assert closed and closed[0]["type"] == "closed"
        assert "without input" in closed[0]["reason"]
    events = [e["event"] for e in it_lab.client.json("GET", "/v1/audit") if e["vm"] == "it1"]
    assert {"connect", "disconnect", "sysrq", "nmi"} <= set(events)


BOOT_LAB = """\
subscriptionId: 11111111-2222-3333-4444-555555555555
resourceGroups:
  - name: boot-rg
    virtualMachines:
      - {name: whole, image: tiny, size: {vcpus: 1, memoryMiB: 256}, adminUsername: azureuser,
         adminPassword: "Passw0rd!", bootDiagnostics: {enabled: true}}
      - {name: hushed, image: tiny, size: {vcpus: 1, memoryMiB: 256}, adminUsername: azureuser,
         adminPassword: "Passw0rd!", bootDiagnostics: {enabled: true}, bootMessages: quiet}
"""


def test_the_whole_boot_reaches_a_viewer_from_the_first_byte(harness: LabHarness) -> None:
    """`bootMessages: normal` (the default): a viewer that asks for the whole history gets the
    firmware's first bytes, the kernel from its banner and the login prompt, byte for byte as
    the serial log has them: the console is attached before the guest runs. `quiet` is the old
    boot: neither the firmware nor the kernel's banner."""
    lab_file = harness.write_lab("boot.yaml", BOOT_LAB)
    harness.cli("up", str(lab_file))
    try:
        for vm in ("whole", "hushed"):
            harness.wait_for_log(vm, rf"{vm} login: ", timeout=120)
        size = harness.log_size("whole")
        with harness.client.console("whole", mode="view", replay=size) as viewer:
            seen = bytearray()
            while len(seen) < size:
                message = viewer.recv(timeout=10)
                if isinstance(message, bytes):
                    seen.extend(message)
        assert bytes(seen[:size]) == harness.boot_log("whole")[:size]
        text = seen.decode(errors="replace")
        # SeaBIOS's serial console resets the terminal, then its banner: the very first bytes.
        assert re.match(r"\x1bc[^\n]*SeaBIOS \(version ", text), text[:200]
        for line in ("Booting from ROM", "Linux version 6.", "Command line: ",
                     "earlyprintk=ttyS0,115200", "Run /init as init process", "whole login: "):
            assert line in text, f"{line!r} is not in the boot log"  # fmt: skip
        # SeaBIOS turns line wrap off; init turns it on again (a terminal cuts long lines).
        assert text.index("\x1b[?7l") < text.index("\x1b[?7h")
        quiet = harness.boot_log("hushed")
        assert b"hushed login: " in quiet
        assert b"SeaBIOS" not in quiet and b"Linux version" not in quiet, quiet[:300]
        print(f"\ntiny boot log: normal {size} bytes, quiet {len(quiet)} bytes")
    finally:
        harness.cli("down", str(lab_file), check=False)
