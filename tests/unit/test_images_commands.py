"""Host-command helpers of the image builders: streaming a long command's output, and finding
what a killed build left mounted in its directory."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from lab.domain.errors import ImageError
from lab.storage.images.commands import mounts_below, release_mounts, run_streaming

MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
40 27 0:22 / /cache/.build-debian.x/work/root/proc rw - proc proc rw
41 27 0:23 / /cache/.build-debian.x/work/root/sys rw - sysfs sysfs rw
42 41 0:24 / /cache/.build-debian.x/work/root/sys/fs/cgroup rw - cgroup2 cgroup2 rw
43 27 0:25 / /cache/.build-debian.x/work/root/dev/pts rw - devpts devpts rw
44 27 0:26 / /cache/.build-debian.xy/root/proc rw - proc proc rw
45 27 0:27 / /cache/.build-debian.x/work/with\\040space rw - tmpfs tmpfs rw
"""


def test_mounts_below_lists_only_the_outermost_mounts_inside() -> None:
    points = mounts_below(Path("/cache/.build-debian.x"), MOUNTINFO)
    assert sorted(points) == [
        "/cache/.build-debian.x/work/root/dev/pts",
        "/cache/.build-debian.x/work/root/proc",
        "/cache/.build-debian.x/work/root/sys",
        "/cache/.build-debian.x/work/with space",
    ]
    assert all("cgroup" not in p for p in points), "submounts go with their outer mount"
    assert mounts_below(Path("/elsewhere"), MOUNTINFO) == []


def test_release_mounts_of_a_plain_directory_does_nothing(tmp_path: Path) -> None:
    assert release_mounts(tmp_path) == []


def test_run_streaming_hands_over_each_line(tmp_path: Path) -> None:
    lines: list[str] = []
    script = "import sys\nfor i in range(3):\n    print('line', i, flush=True)\n"
    script += "print('to stderr', file=sys.stderr)\n"
    run_streaming([sys.executable, "-c", script], lines.append)
    assert lines[:3] == ["line 0", "line 1", "line 2"]
    assert "to stderr" in lines


def test_run_streaming_failure_carries_the_last_lines() -> None:
    script = "for i in range(100):\n    print('step', i)\nraise SystemExit(3)\n"
    with pytest.raises(ImageError, match=r"exit status 3:(.|\n)*step 99") as err:
        run_streaming([sys.executable, "-c", script], lambda line: None, keep_lines=5)
    assert "step 90" not in err.value.message


def test_run_streaming_stops_a_command_that_runs_too_long() -> None:
    started = time.monotonic()
    with pytest.raises(ImageError, match="did not finish within"):
        run_streaming([sys.executable, "-c", "import time; time.sleep(30)"], lambda line: None,
                      timeout=0.5)  # fmt: skip
    assert time.monotonic() - started < 10


def test_run_streaming_missing_program_is_an_image_error() -> None:
    with pytest.raises(ImageError, match="not installed"):
        run_streaming(["/nonexistent/tool"], lambda line: None)
