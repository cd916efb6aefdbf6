"""Load (issue 8): a console flood with 50 viewers, 20 VMs at once, boot logs capped by rotation.

A lab of its own (data dir, daemon, API port), so nothing here disturbs the shared session lab
of the other integration tests, with the default console queue limit (4 MiB). The machinery is
in `loadkit.py` (shared with bench/load.py, which runs the long versions). Every test asserts
measured values and prints its figures through pytest's terminal reporter, past the output
capture, so CI logs keep them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.settings import Settings
from lab.storage.serial_log import virtlogd_cap
from tests.integration.labharness import report_figures
from tests.integration.loadkit import (
    LoadHarness,
    pct,
    rss_growth_bound_kib,
    rtt_line,
    run_fleet,
    run_flood,
    run_rotation,
)

pytestmark = pytest.mark.integration

FLOOD_S = 60
VIEWERS = 50
#: Of them, viewers that read nothing until the flood is over (clients whose network stalled):
#: the daemon must drop each before it holds more than a queue limit of output for it.
STALLED = 10
#: The issue's target for the keystroke round trip of the other VMs' consoles during the flood.
RTT_TARGET_MS = 50.0
#: What the median is held to: about 5x what it measures (p50 3.7-5.1 ms over 1,300-2,300 round
#: trips, README "Load"; 5.09 ms on 2026-12-03, the machine shared with other guests), so a
#: regression that doubles or triples it fails, while a 1.5x slower machine (7-8 ms) passes.
#: The issue's 50 ms would pass a console ten times slower than this one.
RTT_P50_BOUND_MS = 25.0
FLEET = 20


@pytest.fixture(scope="module")
def load_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadHarness]:
    h = LoadHarness(data_dir=Path(tmp_path_factory.mktemp("load")),
                    image_cache=Settings().image_cache_dir, idle_minutes=15)  # fmt: skip
    try:
        h.cli("image", "build", "tiny")
        h.start_daemon()
        h.start_load_lab()
        yield h
    finally:
        h.cleanup()


# -- 1. flood -----------------------------------------------------------------------------------
#: A ceiling on the daemon's lifetime peak (it idles at about 80 MiB); its growth during the flood
#: is bounded by `rss_growth_bound_kib`.
RSS_PEAK_BOUND_MIB = 160
#: Nothing may be lost, but QEMU logs a byte twice when its write to the pty (which the daemon
#: reads) fails with EAGAIN and the serial device retries it. The daemon keeps that pty drained
#: (see PtyConsole); on a 2-core machine shared with other guests a rare byte could still
#: double: at most 1 in this many is accepted (and printed).
DOUBLED_PER = 100_000


def test_flood_with_50_viewers(load_lab: LoadHarness, request: pytest.FixtureRequest) -> None:
    r = run_flood(load_lab, FLOOD_S, VIEWERS, stalled=STALLED)
    bound = rss_growth_bound_kib(VIEWERS)
    report_figures(request.config, f"load: {FLOOD_S} s console flood, {VIEWERS} viewers",
           [*r.lines_out(), f"daemon RSS growth bound {bound / 1024:.0f} MiB"])  # fmt: skip
    # Inside run_flood: the log's offsets advanced by exactly the bytes the guest counted, what
    # virtlogd kept of them is whole base64 lines, every viewer got every byte or a gapless start
    # of them and the slow-viewer notice, and each stalled viewer was dropped.
    assert r.complete + r.dropped == VIEWERS
    assert r.dropped >= STALLED
    assert r.duplicated <= r.written // DOUBLED_PER, f"{r.duplicated} bytes doubled"
    assert r.growth_kib <= bound, f"the daemon grew {r.growth_kib} KiB (bound {bound})"
    assert r.hwm_after_kib <= RSS_PEAK_BOUND_MIB * 1024
    assert r.rate > 10 * 1024, "the guest barely wrote: the flood did not run"
    FLOOD_RTT.extend(r.flood_rtt)


#: The flood's round trips, for the next test.
FLOOD_RTT: list[float] = []


#: A ceiling on the slow tail (README, Load): the other consoles must never stall. About 5x
#: the p95 measured on a quiet machine (11.5-30.6 ms); with other agents' guests on the same 2
#: cores it measured 122.9 ms (2026-12-03), so it is not made tighter.
RTT_P95_CEILING_MS = 150.0


def test_other_consoles_round_trip_during_the_flood() -> None:
    if not FLOOD_RTT:
        pytest.skip("the flood test did not run")
    # The median of the ~2,000 round trips (4-5 ms) is held to 5x that, well inside the issue's
    # 50 ms target; p95 measured 11-31 ms, but the flooding TCG guest, virtlogd, libvirtd, the
    # daemon and the viewers saturate both cores, and p99 reaches 100-330 ms, so p95 gets a
    # ceiling with room for a slower CI machine that still says the console never stalls. Both
    # are printed by the flood test.
    line = rtt_line("round trip during the flood", FLOOD_RTT)
    assert RTT_P50_BOUND_MS < RTT_TARGET_MS
    assert pct(FLOOD_RTT, 50) < RTT_P50_BOUND_MS, line
    assert pct(FLOOD_RTT, 95) < RTT_P95_CEILING_MS, line


# -- 2. rotation --------------------------------------------------------------------------------
def test_boot_log_rotates_within_its_cap_and_reads_by_offset_across(
    load_lab: LoadHarness, request: pytest.FixtureRequest
) -> None:
    cap = virtlogd_cap()
    r = run_rotation(load_lab, cap)
    report_figures(request.config, "load: boot-log rotation", r.lines_out())
    # Inside run_rotation: every read by offset started where the last ended, the bytes read
    # are exactly what the guest counted, reads straddling each file boundary match them, and
    # a read from 0 starts at the oldest kept byte.
    assert cap.total is not None
    assert r.max_disk <= cap.total, f"{r.max_disk} bytes on disk, over the cap of {cap.total}"
    assert r.max_files <= cap.max_backups + 1
    assert r.rotations >= 3
    assert r.duplicated <= r.written // DOUBLED_PER, f"{r.duplicated} bytes doubled"
    assert r.first_kept > 0


# -- 3. twenty VMs ------------------------------------------------------------------------------
#: The API's answers while 20 TCG guests boot on 2 cores (and after): none may fail, and p99 and
#: the slowest stay under these (ms). libvirtd, busy defining and starting the 20 domains, takes
#: up to 2.6 s for a call that is otherwise sub-millisecond; the reconciler's calls run in
#: threads, so the event loop does not wait for them. Measured p99 13-101 ms (README, Load;
#: 2026-12-03: daemon API 13.7 ms, Azure API 34.8 ms): the p99 bound is 5x the highest, so a
#: libvirt call back on the event loop (p99 of seconds) fails it and a 1.5x slower machine does
#: not. The slowest single answer measured 0.15-1.7 s (0.54 s on 2026-12-03); its bound is
#: 3-5x that.
API_P99_BOUND_MS = 500.0
API_MAX_BOUND_MS = 5000.0


def test_20_vms_at_once_the_api_keeps_answering(
    load_lab: LoadHarness, request: pytest.FixtureRequest
) -> None:
    load_lab.cli("down", str(load_lab.data_dir / "load.yaml"))  # 20 VMs, not 22
    r = run_fleet(load_lab, FLEET)
    report_figures(request.config, f"load: {FLEET} VMs at once", r.lines_out())
    assert not r.failures, r.failures[:5]
    assert r.running == FLEET and r.states == {"running"}
    # 20 guests on a few cores: each gets a sliver of CPU, which must not make a kernel give
    # up on its timer (13 in 20 fell back, about 1 in 60 panicked, before `no_timer_check`).
    assert not r.timer_complaints, r.timer_complaints
    for name in r.booting:
        times = r.all_times(name)
        assert pct(times, 99) < API_P99_BOUND_MS, f"{name} API p99 {pct(times, 99):.1f} ms"
        assert max(times) < API_MAX_BOUND_MS, f"{name} API max {max(times):.1f} ms"
