"""What every CLI command shares: the daemon client, error handling, starting the daemon."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.markup import escape

from lab.cli import output
from lab.client.http import LabClient
from lab.domain.errors import DaemonUnavailable, LabError, LocalFileError, as_lab_error
from lab.settings import Settings, get_settings

F = TypeVar("F", bound=Callable[..., Any])

#: Seconds `lab up` waits for a daemon it started to answer.
DAEMON_START_TIMEOUT = 120.0


def handle_errors(func: F) -> F:
    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except LabError as exc:
            _exit_with(exc)
        except OSError as exc:
            # A file of this machine the command itself could not read or write (a lab file,
            # a certificate, the data dir): where and why, not a traceback.
            _exit_with(as_lab_error(exc) or LocalFileError(
                f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}"))

    return wrapper  # type: ignore[return-value]


def _exit_with(exc: LabError) -> NoReturn:
    output.err.print(f"[red]error[/] ({exc.code}): {escape(exc.message)}", highlight=False,
                     soft_wrap=True)  # fmt: skip
    sys.exit(exc.exit_code)


#: `-g/--resource-group` of the commands that name a VM or a scale set.
resource_group_option = click.option(
    "-g", "--resource-group", help="The resource group, if the name is in several."
)
#: `--instance-id N` of the commands that name a VM: NAME is then a scale set.
instance_id_option = click.option(
    "--instance-id",
    type=click.IntRange(min=0),
    metavar="N",
    help="NAME is a scale set: target its instance with this id (`lab vmss show NAME` lists them).",
)


def vm_params(resource_group: str | None, instance_id: int | None = None) -> dict[str, str]:
    """The query of a per-VM route: the resource group and, for a scale set, the instance."""
    params = {"resourceGroup": resource_group} if resource_group else {}
    if instance_id is not None:
        params["instanceId"] = str(instance_id)
    return params


def target_name(name: str, instance_id: int | None) -> str:
    """How a message names what a per-VM command acted on."""
    return name if instance_id is None else f"instance {instance_id} of {name}"


def client() -> LabClient:
    """The daemon of this data dir, started in the background if none runs: VMs outlive the
    daemon, so any command may find them without one."""
    return ensure_daemon(get_settings())


def ensure_daemon(settings: Settings) -> LabClient:
    """Connect to the daemon of this data dir, starting one in the background if none runs."""
    c = LabClient(settings)
    if c.alive():
        return c
    if daemon_starting(settings):
        return _wait_for_daemon(c, None, settings.data_dir / "daemon.log")
    build_image(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.data_dir / "daemon.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lab.cli", "serve"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
    return _wait_for_daemon(c, proc, log_path)


def daemon_starting(settings: Settings) -> bool:
    """True if a daemon holds this data dir's lock (it may not answer yet while it starts)."""
    path = settings.data_dir / "daemon.lock"
    if not path.exists():
        return False
    with path.open("rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def _wait_for_daemon(
    c: LabClient, proc: subprocess.Popen[bytes] | None, log_path: Path
) -> LabClient:
    deadline = time.monotonic() + DAEMON_START_TIMEOUT
    while time.monotonic() < deadline:
        if c.alive():
            return c
        if proc is not None and proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise DaemonUnavailable(f"the lab daemon exited at start; {log_path} says:\n{tail}")
        time.sleep(0.1)
    raise DaemonUnavailable(f"the lab daemon did not answer in time; see {log_path}")


def build_image(settings: Settings, name: str = "tiny") -> None:
    """Build an image here, with a progress bar, rather than silently in the daemon (images
    are built offline and cached outside the data dir, for every lab of this user)."""
    from lab.storage.images import ImageCache

    cache = ImageCache(settings.image_cache_dir, settings.images_dir)
    # A matching cached build makes this a no-op of milliseconds.
    with output.progress_bar(f"image {name}") as update:
        manifest = cache.build(name, progress=update)
    output.err.print(
        f"image {name}: {manifest.size_bytes / 1e6:.1f} MB, built in {manifest.build_seconds:.1f} s"
    )
