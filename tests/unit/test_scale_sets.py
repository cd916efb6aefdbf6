"""Scale sets over `FakeHypervisor`: instances with Azure's identity, scale out and in, model
versions and upgrades, and the lab file's `scaleSets`."""

from __future__ import annotations

import pytest

from lab.domain.errors import LabFileError, NotFound
from lab.domain.labfile import parse_lab_definition
from lab.domain.scale_set import ScaleSetModel, UpgradeMode, computer_name
from lab.domain.vm import VmModel
from lab.hypervisor.fake import FakeHypervisor
from lab.services.lab import Lab
from tests.unit.fakelab import PASSWORD_HASH, SUBSCRIPTION, new_vm, run


def model(
    capacity: int = 3, mode: UpgradeMode = UpgradeMode.MANUAL, **profile: object
) -> ScaleSetModel:
    fields: dict[str, object] = {"image": "tiny", "vcpus": 1, "memory_mib": 256,
                                 "admin_username": "azureuser", **profile}  # fmt: skip
    return ScaleSetModel(
        subscription_id=SUBSCRIPTION, resource_group="rg1", name="web", unique_id="u-1",
        profile=VmModel.model_validate(fields), admin_password_hash=PASSWORD_HASH,
        capacity=capacity, upgrade_mode=mode, computer_name_prefix="web",
    )  # fmt: skip


def ids(lab: Lab, m: ScaleSetModel) -> list[str]:
    return [v.identity.instance_id or "" for v in lab.scale_sets.instances(m)]


def test_computer_names_are_base36_with_six_digits() -> None:
    assert computer_name("web", 0) == "web000000"
    assert computer_name("web", 10) == "web00000A"
    assert computer_name("web", 36) == "web000010"


def test_instances_have_azure_identity_and_their_own_domains(lab: Lab, hv: FakeHypervisor) -> None:
    async def go() -> None:
        await lab.vms.create(new_vm("vm1"))
        m = await lab.scale_sets.put(model())
        views = lab.scale_sets.instances(m)
        assert [v.identity.name for v in views] == ["web_0", "web_1", "web_2"]
        assert [v.identity.computer_name for v in views] == ["web000000", "web000001", "web000002"]
        assert views[1].identity.resource_id.endswith(
            "/virtualMachineScaleSets/web/virtualMachines/1"
        )
        assert len({v.identity.domain_name for v in views}) == 3
        assert all(v.power_state.value == "running" for v in views)
        # Each instance's guest gets its own host name; VMs list without instances.
        initrd = (lab.ctx.vm_dir(views[2].identity) / "initrd.img").read_bytes()
        assert b"web000002\n" in initrd
        assert [v.identity.name for v in lab.vms.list()] == ["vm1"]
        assert len(lab.vms.machines()) == 4
        # The boot-diagnostics blobs are named for the instance.
        blobs = lab.ctx.boot_blobs(views[0].identity, views[0].model)
        assert blobs.serial_log.startswith("web_0.")

    run(lab, go)


def test_scale_out_and_in_never_reuses_ids(lab: Lab) -> None:
    async def go() -> None:
        m = await lab.scale_sets.put(model(capacity=3))
        m = await lab.scale_sets.scale(m, 5)
        assert ids(lab, m) == ["0", "1", "2", "3", "4"]
        m = await lab.scale_sets.scale(m, 2)
        assert ids(lab, m) == ["0", "1"]  # the highest ids go first
        m = await lab.scale_sets.scale(m, 3)
        assert ids(lab, m) == ["0", "1", "5"]
        assert lab.scale_sets.get("rg1", "web").capacity == 3
        await lab.scale_sets.delete_instances(m, ["0"])
        assert ids(lab, m) == ["1", "5"] and lab.scale_sets.get("rg1", "web").capacity == 2

    run(lab, go)


def test_model_change_then_manual_upgrade_of_one_instance(lab: Lab, hv: FakeHypervisor) -> None:
    async def go() -> None:
        m = await lab.scale_sets.put(model(capacity=2))
        assert all(lab.scale_sets.latest_model_applied(m, v) for v in lab.scale_sets.instances(m))
        m = await lab.scale_sets.put(model(capacity=2, kernel_args="quiet"))
        assert m.model_version == 1
        views = lab.scale_sets.instances(m)
        assert not any(lab.scale_sets.latest_model_applied(m, v) for v in views)
        await lab.scale_sets.upgrade(m, ["1"])
        applied = {v.identity.instance_id: lab.scale_sets.latest_model_applied(m, v)
                   for v in lab.scale_sets.instances(m)}  # fmt: skip
        assert applied == {"0": False, "1": True}
        upgraded = lab.scale_sets.instance(m, "1")
        assert upgraded.model.kernel_args == "quiet" and upgraded.power_state.value == "running"
        assert "quiet" in hv.xml(upgraded.identity.domain_name)
        # The same model again is not a new version.
        again = await lab.scale_sets.put(model(capacity=2, kernel_args="quiet"))
        assert again.model_version == 1

    run(lab, go)


def test_automatic_mode_rolls_every_instance(lab: Lab) -> None:
    async def go() -> None:
        m = await lab.scale_sets.put(model(capacity=2, mode=UpgradeMode.AUTOMATIC))
        m = await lab.scale_sets.put(model(capacity=2, mode=UpgradeMode.AUTOMATIC,
                                           kernel_args="quiet"))  # fmt: skip
        assert all(lab.scale_sets.latest_model_applied(m, v) for v in lab.scale_sets.instances(m))

    run(lab, go)


def test_delete_removes_every_instance_and_the_model(lab: Lab) -> None:
    async def go() -> None:
        m = await lab.scale_sets.put(model(capacity=2))
        await lab.scale_sets.delete(m)
        assert lab.vms.machines() == []
        with pytest.raises(NotFound):
            lab.scale_sets.get("rg1", "web")

    run(lab, go)


SS_LAB = """\
resourceGroups:
  - name: rg1
    scaleSets:
      - name: web
        sku: {capacity: 2}
        upgradePolicy: {mode: Automatic}
        virtualMachineProfile:
          image: tiny
          size: {vcpus: 1, memoryMiB: 256}
          adminUsername: azureuser
          adminPassword: "Passw0rd!"
          diagnosticsProfile: {bootDiagnostics: {enabled: true}}
"""


def test_lab_file_scale_sets_come_up_and_down(lab: Lab) -> None:
    defn = parse_lab_definition(SS_LAB, source="ss.yaml")
    ((_rg, ss),) = defn.scale_sets()
    assert ss.computer_name_prefix == "web" and ss.sku.capacity == 2

    async def go() -> None:
        results = await lab.reconciler.up(defn)
        assert [(r.vm.identity.name, r.action) for r in results] == [
            ("web_0", "created"),
            ("web_1", "created"),
        ]
        again = await lab.reconciler.up(defn)
        assert [r.action for r in again] == ["running", "running"]
        gone = await lab.reconciler.down(defn)
        assert [r.action for r in gone] == ["deleted", "deleted"] and lab.vms.machines() == []

    run(lab, go)


@pytest.mark.parametrize(
    ("edit", "where", "words"),
    [
        (("capacity: 2", "capacity: 99"), "sku.capacity", "0 to 20"),
        (("mode: Automatic", "mode: Rolling"), "upgradePolicy.mode", "Manual"),
        (("storageProfile", "x"), None, None),
        (
            (
                "{enabled: true}",
                "{enabled: true, storageUri: 'https://nope.blob.core.windows.net/'}",
            ),
            "storageUri",
            "not defined",
        ),
        (
            ("image: tiny", "image: tiny\n          computerNamePrefix: 9bad"),
            "computerNamePrefix",
            "starting with a letter",
        ),
    ],
)
def test_lab_file_scale_set_errors_are_located(edit: tuple[str, str], where: str | None,
                                               words: str | None) -> None:  # fmt: skip
    text = SS_LAB.replace(*edit)
    if where is None:
        parse_lab_definition(text, source="ss.yaml")  # an edit that changes nothing
        return
    with pytest.raises(LabFileError) as err:
        parse_lab_definition(text, source="ss.yaml")
    assert where in err.value.message and words in err.value.message, err.value.message


def test_container_names_leave_out_what_azure_storage_refuses() -> None:
    from lab.domain.boot_diagnostics import container_name

    assert container_name("web_12", "id") == "bootdiagnostics-web12-id"
    assert container_name("My.VM--x", "id") == "bootdiagnostics-myvm-x-id"
    assert container_name("it1", "id") == "bootdiagnostics-it1-id"
