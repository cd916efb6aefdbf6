"""Reading ARM request bodies of compute resources into the lab file's models, so a PUT is
validated by the same rules (and with the same messages) as a lab file, with error targets
that name the ARM body's fields."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from lab.domain.errors import InvalidInput, StorageAccountNotFound
from lab.domain.vm import VmModel
from lab.services.lab import Lab

M = TypeVar("M", bound=BaseModel)
_CUSTOM_SIZE = re.compile(r"^Lab_(\d+)vCPU_(\d+)MiB$")
#: A marketplace SKU of a generation 2 image ends so ("12-gen2", "22_04-lts-gen2"); the lab's
#: own are "<image>-gen2" (`image_reference`).
GEN2_SUFFIX = "-gen2"


def obj(parent: Any, key: str, where: str) -> dict[str, Any]:
    """`parent[key]` as an object ({} when absent); anything else is a located error."""
    value = parent.get(key) if isinstance(parent, dict) else None
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{where}.{key} must be an object", target=f"{where}.{key}")
    return value


def arm_size(size: Any) -> Any:
    """An Azure size name as is; the lab's `Lab_<n>vCPU_<m>MiB` as a custom size."""
    if isinstance(size, str) and (m := _CUSTOM_SIZE.match(size)):
        return {"vcpus": int(m.group(1)), "memoryMiB": int(m.group(2))}
    return size


def guest_fields(props: dict[str, Any], where: str) -> dict[str, Any]:
    """Image, OS, admin account and boot diagnostics of a VM's (or a VM profile's) properties,
    as lab-file fields. `where` is the properties' path in the body, for error targets."""
    storage = obj(props, "storageProfile", where)
    ref = obj(storage, "imageReference", f"{where}.storageProfile")
    sku = ref.get("sku")
    gen2_sku = isinstance(sku, str) and sku.lower().endswith(GEN2_SUFFIX)
    image = ref.get("offer") or (sku[: -len(GEN2_SUFFIX)] if gen2_sku and sku else sku)
    if not image and isinstance(ref.get("id"), str):
        image = ref["id"].rstrip("/").rsplit("/", 1)[-1]
    if not isinstance(image, str) or not image:
        raise InvalidInput(
            f"{where}.storageProfile.imageReference must name a lab image: "
            '{"publisher": "SerialConsoleLab", "offer": "tiny", "sku": "tiny", '
            '"version": "latest"} (`lab image ls` lists them)',
            target=f"{where}.storageProfile.imageReference",
        )
    os_profile = obj(props, "osProfile", where)
    os_disk = obj(storage, "osDisk", f"{where}.storageProfile")
    bd = obj(obj(props, "diagnosticsProfile", where), "bootDiagnostics",
             f"{where}.diagnosticsProfile")  # fmt: skip
    trusted = _trusted_launch(obj(props, "securityProfile", where), f"{where}.securityProfile")
    return {
        "image": image,
        "hyperVGeneration": "V2" if gen2_sku or trusted else "V1",
        "osType": os_disk.get("osType", "Linux"),
        "adminUsername": os_profile.get("adminUsername"),
        "adminPassword": os_profile.get("adminPassword"),
        "bootDiagnostics": {"enabled": bool(bd.get("enabled", False)),
                            "storageUri": bd.get("storageUri")},
    }  # fmt: skip


def _trusted_launch(security: dict[str, Any], where: str) -> bool:
    """Whether `securityProfile` asks for Trusted Launch, which is a generation 2 VM. Its UEFI
    settings (Secure Boot, vTPM) are taken but not emulated: OVMF boots without them, as the
    README says. A confidential VM needs hardware the lab does not have."""
    kind = security.get("securityType")
    if kind is None or (isinstance(kind, str) and kind.lower() == "standard"):
        return False
    if isinstance(kind, str) and kind.lower() == "trustedlaunch":
        return True
    raise InvalidInput(f"{where}.securityType '{kind}' is not supported: the lab runs Standard "
                       "and TrustedLaunch (generation 2, UEFI) VMs", target=f"{where}.securityType")


def image_reference(image: str, generation: str) -> dict[str, str]:
    """A VM's `imageReference` as a GET shows it; a PUT of it gives the same VM again."""
    sku = image + GEN2_SUFFIX if generation == "V2" else image
    return {"publisher": "SerialConsoleLab", "offer": image, "sku": sku, "version": "latest"}


def arm_fields(where: str) -> dict[str, str]:
    """Where each lab-file field of a guest lives under `where` in an ARM body."""
    return {
        "image": f"{where}.storageProfile.imageReference",
        "hyperVGeneration": f"{where}.storageProfile.imageReference.sku",
        "osType": f"{where}.storageProfile.osDisk.osType",
        "adminUsername": f"{where}.osProfile.adminUsername",
        "adminPassword": f"{where}.osProfile.adminPassword",
        "bootDiagnostics": f"{where}.diagnosticsProfile.bootDiagnostics",
        "diagnosticsProfile": f"{where}.diagnosticsProfile",
        "computerNamePrefix": f"{where}.osProfile.computerNamePrefix",
    }


def validated(cls: type[M], data: dict[str, Any], lab: Lab, targets: Mapping[str, str]) -> M:
    """`data` (lab-file shape) validated as `cls`, against the lab's built images; the first
    problem is an InvalidInput whose target is the ARM field (`targets` maps lab-file paths,
    dotted, to ARM paths)."""
    data = {k: v for k, v in data.items() if v is not None}  # absent: "is required"
    # The catalogue a PUT may use: the images built in this lab's cache.
    context = {"known_images": frozenset(m.name for m in lab.images.list())}
    try:
        return cls.model_validate(data, context=context, by_alias=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(p) for p in first["loc"]]
        target = _arm_target(loc, targets)
        if first["type"] == "missing":
            raise InvalidInput(f"{target} is required", target=target) from None
        raise InvalidInput(f"{target}: {first['msg']}", target=target) from None


def _arm_target(loc: list[str], targets: Mapping[str, str]) -> str:
    for cut in range(len(loc), 0, -1):  # the longest lab-file path that has an ARM name
        arm = targets.get(".".join(loc[:cut]))
        if arm is not None:
            return ".".join([arm, *loc[cut:]])
    return ".".join(loc)


def check_storage_account(lab: Lab, model: VmModel) -> None:
    bd = model.boot_diagnostics
    if bd.storage_uri is not None and lab.storage_accounts.get(bd.storage_account or "") is None:
        raise StorageAccountNotFound(
            f"Storage account '{bd.storage_account}' not found. Ensure storage account is not "
            "deleted and belongs to the same Azure location as the VM.",
            target="properties.diagnosticsProfile",
        )
