"""Settings from the environment, prefix `LAB_` (pydantic-settings), in one place."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "serial-console-lab"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LAB_", extra="ignore")

    libvirt_uri: str = "qemu:///system"
    data_dir: Path = Field(default_factory=_default_data_dir)
    images_dir: Path = REPO_ROOT / "images"
    #: Where the training scenarios live (`<dir>/<name>/scenario.yaml`).
    scenarios_dir: Path = REPO_ROOT / "scenarios"
    #: The web portal (`index.html`, `src/`, and `node_modules/` from `npm ci`), served at `/`.
    web_dir: Path = REPO_ROOT / "web"
    #: "auto" probes KVM by booting the tiny kernel under it; "kvm" or "qemu" (TCG) forces one.
    accel: str = "auto"
    #: Seconds a graceful powerOff waits for the guest before it pulls the plug.
    shutdown_timeout: float = 60.0
    #: Bytes of console history a new console subscriber gets before the live stream.
    replay_bytes: int = 64 * 1024
    #: Bytes a console viewer may fall behind before it is dropped (it never slows the guest).
    console_queue_limit: int = 4 * 1024 * 1024
    #: The Azure-compatible HTTPS API: address and port (0 turns it off).
    api_host: str = "127.0.0.1"
    api_port: int = 8443
    #: Minutes an access token of the lab's authority lives (`expires_in`).
    token_lifetime_minutes: float = 60.0
    #: Minutes of keyboard silence after which an interactive console session is closed.
    idle_timeout_minutes: float = 20.0
    #: Capacity admission of scenario starts (`lab/services/admission.py`): guests booting
    #: at once (0: one per core), the memory ceiling as a share of what the hosts offer
    #: guests, and how many starts may wait in the queue before more are refused.
    admission_booting: int = 0
    admission_memory_percent: float = 90.0
    admission_queue_max: int = 100
    #: Seconds Run Command and the VM access extension wait for a guest agent that does not
    #: answer before they fail as Azure does (`VMAgentStatusCommunicationError`).
    agent_wait_s: float = 30.0

    @property
    def socket_path(self) -> Path:
        return self.data_dir / "lab.sock"

    #: Where built images are cached; default `<data_dir>/images`. Labs may share one.
    image_cache: Path | None = None

    #: What holds for the whole host, whichever data dir: the KVM probe's verdict. Default
    #: `$XDG_CACHE_HOME/serial-console-lab` (`~/.cache/...`), beside the Azure CLI the tests
    #: install.
    host_cache: Path | None = None

    @property
    def host_cache_dir(self) -> Path:
        if self.host_cache is not None:
            return self.host_cache
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "serial-console-lab"

    @property
    def image_cache_dir(self) -> Path:
        return self.image_cache or self.data_dir / "images"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def disk_dir(self) -> Path:
        return self.data_dir / "disks"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "state"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
