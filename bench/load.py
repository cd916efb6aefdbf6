"""Load soak: the long versions of tests/integration/test_load.py, with figures and ratios.

1. Flood: one guest floods its console (`cat /dev/urandom | base64`, counted by `tee | wc -c`)
   for --seconds with --viewers read-only viewers attached (websocket clients in a process of
   their own; --stalled of them read nothing until the end and must be dropped), while another
   VM's console is timed for keystroke round trips (one byte to its echo). Reported: bytes the
   guest wrote against the log's offset advance (they must be equal), viewers that got every
   byte or were dropped as too slow, the daemon's memory (RSS before, VmHWM after, and the
   growth against the bound test_load.py asserts), and round-trip percentiles quiet and during
   the flood.
2. Rotation: the flood VM writes until its log is a whole file past virtlogd's cap, while a
   reader polls the boot log by offset: reads contiguous across the rotations, the files on
   disk against the cap.
3. Fleet: --vms VMs (1 vCPU, 128 MiB) up at once; GETs on the daemon's API and the Azure API
   every 50 ms from before `lab up` until every VM is at `login:` and --settle s after.

The bench starts its own daemon on a temporary data dir (sharing the built image cache) and
removes everything at the end, also on failure. Take figures on a quiet machine.

    .venv/bin/python bench/load.py [--seconds 300] [--viewers 50] [--vms 20] [--settle 60]
                                   [--phases flood,rotation,fleet] [--nice-viewers N]
                                   [--stalled N] [--keep-data]
    .venv/bin/python bench/load.py --seconds 20 --viewers 10 --vms 4 --settle 5   # smoke run
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: tests.integration

import benchlab

from lab.settings import Settings
from lab.storage.serial_log import virtlogd_cap
from tests.integration.loadkit import (
    QUEUE_LIMIT,
    LoadHarness,
    pct,
    rss_growth_bound_kib,
    run_fleet,
    run_flood,
    run_rotation,
)


def note(message: str) -> None:
    benchlab.note("load", message)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    benchlab.Targets.add_option(parser)
    parser.add_argument("--seconds", type=int, default=300,
                        help="seconds the guest floods its console (default 300)")  # fmt: skip
    parser.add_argument("--viewers", type=int, default=50,
                        help="read-only viewers during the flood (default 50)")  # fmt: skip
    parser.add_argument("--vms", type=int, default=20, help="VMs up at once (default 20)")
    parser.add_argument("--settle", type=float, default=60,
                        help="seconds the APIs are timed after every VM is at login:"
                             " (default 60)")  # fmt: skip
    parser.add_argument("--phases", default="flood,rotation,fleet",
                        help="which phases, comma-separated (default all three)")  # fmt: skip
    parser.add_argument("--nice-viewers", type=int, default=0, metavar="N",
                        help="run the viewers' process at nice N (default 0)")  # fmt: skip
    parser.add_argument("--stalled", type=int, default=0, metavar="N",
                        help="of the viewers, N read nothing until the flood is over, as"
                             " clients whose network stalled (default 0)")  # fmt: skip
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the temporary data dir (serial logs, daemon log)")  # fmt: skip
    args = parser.parse_args()
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}

    benchlab.exit_on_sigterm()
    data_dir = Path(tempfile.mkdtemp(prefix="lab-bench-load-"))
    lab = LoadHarness(data_dir=data_dir, image_cache=Settings().image_cache_dir,
                      idle_minutes=60)  # fmt: skip
    out: list[str] = []
    targets = benchlab.Targets()
    try:
        note(f"starting a daemon on {data_dir}")
        lab.start_daemon()
        if phases & {"flood", "rotation"}:
            lab.start_load_lab()
        if "flood" in phases:
            note(f"flood: {args.seconds} s, {args.viewers} viewers")
            flood = run_flood(lab, args.seconds, args.viewers, args.nice_viewers, args.stalled)
            bound = rss_growth_bound_kib(args.viewers)
            p95q, p95f = pct(flood.quiet_rtt, 95), pct(flood.flood_rtt, 95)
            out += [f"Flood ({args.seconds} s, {args.viewers} viewers, console queue limit"
                    f" {QUEUE_LIMIT / 2**20:g} MiB):", *(f"  {x}" for x in flood.lines_out()),
                    f"  ratio daemon RSS growth / bound ({bound / 1024:.0f} MiB):"
                    f" {flood.growth_kib / bound:.2f}",
                    f"  ratio round trip p95 during the flood / 50 ms target: {p95f / 50:.2f}"
                    f" (quiet p95 {p95q:.2f} ms): {targets.verdict('flood p95', p95f < 50)}",
                    "  log complete: yes (its offsets advanced by exactly the guest's count)",
                    ""]  # fmt: skip
        if "rotation" in phases:
            note("rotation: writing past virtlogd's cap")
            rot = run_rotation(lab, virtlogd_cap())
            out += ["Boot-log rotation:", *(f"  {x}" for x in rot.lines_out()), ""]
        if "fleet" in phases:
            if phases & {"flood", "rotation"}:
                lab.cli("down", str(lab.data_dir / "load.yaml"))
            note(f"fleet: {args.vms} VMs at once")
            fleet = run_fleet(lab, args.vms, settle_s=args.settle)
            out += [f"{args.vms} VMs at once:", *(f"  {x}" for x in fleet.lines_out())]
            for name in fleet.booting:
                during, after = fleet.booting[name], fleet.after[name]
                out.append(f"  ratio {name} API p99 during the boots / all running:"
                           f" {pct(during, 99) / pct(after, 99):.2f}")  # fmt: skip
    except BaseException:
        note(f"daemon log (tail):\n{lab.daemon_log()[-2000:]}")
        raise
    finally:
        note("cleaning up")
        lab.cleanup()
        if args.keep_data:
            note(f"data dir kept: {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)
    print("\n".join(out))
    return targets.exit_status(args.check, "load")


if __name__ == "__main__":
    raise SystemExit(main())
