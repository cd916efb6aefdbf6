"""Bad-input figures: the long runs of the suite's fuzz tests, with how many examples each tried.

What is run: the unit tests that fuzz the lab's input handling, with more examples than `make
test` gives them (the suite keeps moderate counts so it stays quick):

- `tests/unit/test_azure_openapi.py`: schemathesis against `/openapi.json` with an Owner
  token, stateless (`--openapi-examples` per operation, in each of schemathesis' phases) and
  stateful (`--scenarios` chains of up to 8 linked calls against a lab served by uvicorn on one
  event loop, seeded with a VM, a scale set and a storage account). Passes when no answer is a
  5xx and every error has Azure's body.
- `tests/unit/test_loader_fuzz.py`: hypothesis against the lab-file and scenario loaders
  (`--loader-examples` per test). Passes when every bad file gets a located error.
- `tests/unit/test_blob_names.py`: blob names against the store and the blob endpoint.

Reported: pass/fail, seconds, and for the API the calls made by kind and status. Each run is a
pytest process over the fake hypervisor: no guest boots, so this runs anywhere `make unit` does.

    .venv/bin/python bench/fuzz.py [--openapi-examples 60] [--scenarios 300]
                                   [--loader-examples 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _pytest(test: str, env: dict[str, str]) -> tuple[bool, float, str]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", test, "-p", "no:cacheprovider", "-q", "-x"],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True,
    )  # fmt: skip
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or [""]
    return proc.returncode == 0, time.monotonic() - started, tail[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--openapi-examples", type=int, default=60)
    parser.add_argument("--scenarios", type=int, default=300)
    parser.add_argument("--loader-examples", type=int, default=2000)
    # Its targets are the runs themselves: each must pass (it exits 1 on a failure anyway).
    parser.add_argument("--check", action="store_true", help="exit 1 when a run fails")
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory(prefix="lab-fuzz-") as tmp:
        report = Path(tmp) / "openapi.json"
        passed, seconds, tail = _pytest("tests/unit/test_azure_openapi.py", {
            "LAB_OPENAPI_EXAMPLES": str(args.openapi_examples),
            "LAB_OPENAPI_SCENARIOS": str(args.scenarios), "LAB_OPENAPI_REPORT": str(report),
        })  # fmt: skip
        ok &= passed
        print(f"openapi (schemathesis): {'pass' if passed else 'FAIL'} in {seconds:.0f} s; {tail}")
        if report.exists():
            calls = json.loads(report.read_text())
            for key in sorted(calls):
                print(f"  {key:48} {calls[key]:>7}")
    passed, seconds, tail = _pytest("tests/unit/test_loader_fuzz.py",
                                    {"LAB_FUZZ_EXAMPLES": str(args.loader_examples)})  # fmt: skip
    ok &= passed
    print(f"loaders (hypothesis, {args.loader_examples} examples per test): "
          f"{'pass' if passed else 'FAIL'} in {seconds:.0f} s; {tail}")  # fmt: skip
    passed, seconds, tail = _pytest("tests/unit/test_blob_names.py", {})
    ok &= passed
    print(f"blob names: {'pass' if passed else 'FAIL'} in {seconds:.0f} s; {tail}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
