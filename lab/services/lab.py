"""`Lab`: the services of one data dir, wired together; what the daemon holds."""

from __future__ import annotations

import logging

from lab.console.broker import RemoteLog
from lab.domain.errors import LabError
from lab.domain.hosts import LOCAL
from lab.domain.labfile import LabDefinition, parse_lab_definition
from lab.hypervisor.base import DomainState, Hypervisor
from lab.hypervisor.hosts import HostRouter
from lab.services.accel import choose_accel
from lab.services.admission import Admission, Capacity
from lab.services.boot_diagnostics import BootDiagnosticsService
from lab.services.classes import ClassService
from lab.services.console_keeper import ConsoleKeeper
from lab.services.consoles import ConsoleService
from lab.services.context import LabContext
from lab.services.hosts import ConnectHost, HostService
from lab.services.identity import DeviceSignIns, IdentityService
from lab.services.lookup import Lookup
from lab.services.reconcile import Reconciler
from lab.services.scale_sets import ScaleSetService
from lab.services.scenario_checks import ScenarioChecker
from lab.services.scenarios import ScenarioService
from lab.services.serial_console import SerialConsoleService
from lab.services.storage_accounts import StorageAccountService
from lab.services.vm_agent import VmAgentService
from lab.services.vms import VmService
from lab.settings import Settings
from lab.storage.blobs import BlobStore
from lab.storage.images import ImageCache
from lab.storage.state import StateFile

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "tiny"


class Lab:
    def __init__(
        self, settings: Settings, hypervisor: Hypervisor, connect_host: ConnectHost | None = None
    ) -> None:
        self.settings = settings
        for d in (settings.data_dir, settings.state_dir, settings.blob_dir, settings.disk_dir):
            d.mkdir(parents=True, exist_ok=True)
        images = ImageCache(settings.image_cache_dir, settings.images_dir)
        router = HostRouter(hypervisor)
        self.ctx = LabContext(settings, router, images, BlobStore(settings.blob_dir))
        state = StateFile(settings.state_dir / "resources.json")
        self.hosts = HostService(router, state, self.ctx.lab_id, connect_host)
        self.consoles = ConsoleService(self.ctx)
        self.vms = VmService(self.ctx, self.consoles, hosts=self.hosts)
        self.consoles.remote_log = self._remote_log
        self.console_keeper = ConsoleKeeper(self.vms, self.consoles)
        self.boot_diagnostics = BootDiagnosticsService(self.ctx)
        self.storage_accounts = StorageAccountService(state)
        self.identity = IdentityService(state)
        self.device_sign_ins = DeviceSignIns()
        self.serial_console = SerialConsoleService(state, self.storage_accounts)
        self.scale_sets = ScaleSetService(self.vms, state)
        self.lookup = Lookup(self.vms, self.scale_sets, self.storage_accounts)
        self.admission = Admission(self.vms.slots, self._capacity,
                                   max_booting=settings.admission_booting,
                                   memory_percent=settings.admission_memory_percent,
                                   queue_max=settings.admission_queue_max)  # fmt: skip
        self.vm_agent = VmAgentService(self.ctx, state, wait_s=settings.agent_wait_s)
        self.scenarios = ScenarioService(self.ctx, self.vms, state, self.admission)
        self.scenario_checks = ScenarioChecker(self.scenarios, self.consoles)
        self.classes = ClassService(state, self.identity, self.scenarios, self.vms,
                                    settings.data_dir / "classes",
                                    queued=self.admission.position)  # fmt: skip
        self.reconciler = Reconciler(self.vms, self.storage_accounts, self.scale_sets,
                                     self.identity)
        # Now that every service declared its part: a damaged state file stops the lab here,
        # with what is wrong and how to recover, not at some later request.
        state.check()
        self.hosts.start()
        self.accel_reason = ""
        hypervisor.on_lifecycle(self._on_lifecycle)

    @property
    def images(self) -> ImageCache:
        return self.ctx.images

    def choose_accel(self) -> str:
        """Probe KVM once (by booting the tiny image under it) and use it only if it works."""
        tiny = self.images.get(DEFAULT_IMAGE)
        image_dir = self.images.path(tiny)
        accel, why = choose_accel(
            self.settings.accel,
            image_dir / tiny.kernel,
            image_dir / tiny.initrd,
            tiny.kernel_version,
            self.settings.host_cache_dir / "accel.json",
        )
        self.ctx.hypervisor.set_accel(accel)
        self.accel_reason = why
        return accel

    def _capacity(self) -> Capacity:
        """The reachable hosts' memory for guests, and what their guests hold (blocking)."""
        loads = [load for load in self.hosts.loads() if load.reachable]
        return Capacity(sum(load.used_memory_mib for load in loads),
                        sum(load.max_memory_mib for load in loads))

    def parse(self, text: str, source: str) -> LabDefinition:
        return parse_lab_definition(text, source=source, known_images=self.images.names())

    def _remote_log(self, domain: str) -> RemoteLog | None:
        # A guest on a remote host: its console stream feeds its log copy.
        try:
            host = self.ctx.hypervisor.host_of(domain)
        except LabError:
            return None
        if host == LOCAL:
            return None
        return self.vms.log_mirrors.tap(domain)

    def _on_lifecycle(self, domain: str, state: DomainState, reason: str) -> None:
        # Runs on libvirt's event thread: only log; brokers notice the closed stream themselves.
        if state is DomainState.SHUTOFF:
            log.info("domain %s stopped: %s", domain, reason or "no reason given")
