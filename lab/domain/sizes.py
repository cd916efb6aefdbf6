"""VM sizes: a small table of Azure size names, and custom sizes given as vCPUs and memory.

A VM's size in a lab file is either an Azure size name (``Standard_B1s``; looked up without
regard to case, as Azure does) or a custom ``{vcpus: 1, memoryMiB: 512}`` mapping. Both resolve
to a `VmSize`. The table is small on purpose: the lab boots real guests on one machine, so only
sizes that fit comfortably (1-8 vCPUs, up to 16 GiB) are listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from lab.domain.errors import InvalidInput

MIN_VCPUS = 1
MAX_VCPUS = 8
MIN_MEMORY_MIB = 128
MAX_MEMORY_MIB = 16384


@dataclass(frozen=True, slots=True)
class AzureSize:
    """One row of the size table, as Azure's ``vmSizes`` listing describes a size."""

    name: str
    vcpus: int
    memory_mib: int


_TABLE: tuple[AzureSize, ...] = (
    AzureSize("Standard_B1ls", 1, 512),
    AzureSize("Standard_B1s", 1, 1024),
    AzureSize("Standard_B1ms", 1, 2048),
    AzureSize("Standard_B2s", 2, 4096),
    AzureSize("Standard_B2ms", 2, 8192),
    AzureSize("Standard_B4ms", 4, 16384),
    AzureSize("Standard_A1_v2", 1, 2048),
    AzureSize("Standard_A2_v2", 2, 4096),
    AzureSize("Standard_A4_v2", 4, 8192),
    AzureSize("Standard_A8_v2", 8, 16384),
    AzureSize("Standard_DS1_v2", 1, 3584),
    AzureSize("Standard_DS2_v2", 2, 7168),
    AzureSize("Standard_D2s_v3", 2, 8192),
    AzureSize("Standard_D4s_v3", 4, 16384),
    AzureSize("Standard_D2s_v5", 2, 8192),
    AzureSize("Standard_D2as_v5", 2, 8192),
    AzureSize("Standard_F1s", 1, 2048),
    AzureSize("Standard_F2s_v2", 2, 4096),
)

#: The known Azure sizes by their canonical name, in table order.
AZURE_SIZES: Mapping[str, AzureSize] = MappingProxyType({s.name: s for s in _TABLE})

_BY_LOWER: Mapping[str, AzureSize] = MappingProxyType({s.name.lower(): s for s in _TABLE})

#: The size a VM gets when its lab-file entry names none.
DEFAULT_SIZE_NAME = "Standard_B1s"


def lookup_size(name: str) -> AzureSize | None:
    """The table row for an Azure size name (case-insensitive), or None if it is not listed."""
    return _BY_LOWER.get(name.lower())


def known_size_names() -> list[str]:
    """The canonical names of every listed size, in table order."""
    return list(AZURE_SIZES)


def unknown_size_message(name: str) -> str:
    """What to say about a size name that is not in the table (shared with the API)."""
    return (
        f"The VM size '{name}' is not known to the lab. Use one of: "
        f"{', '.join(AZURE_SIZES)}; or a custom size "
        f"{{vcpus: {MIN_VCPUS}-{MAX_VCPUS}, memoryMiB: {MIN_MEMORY_MIB}-{MAX_MEMORY_MIB}}}."
    )


class VmSize(BaseModel):
    """A resolved size: virtual CPUs and memory in MiB (``{vcpus: 1, memoryMiB: 512}`` in YAML)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    vcpus: int = Field(description=f"virtual CPUs, {MIN_VCPUS}-{MAX_VCPUS}")
    memory_mib: int = Field(
        validation_alias="memoryMiB",
        serialization_alias="memoryMiB",
        description=f"memory in MiB, {MIN_MEMORY_MIB}-{MAX_MEMORY_MIB}",
    )

    @field_validator("vcpus")
    @classmethod
    def _check_vcpus(cls, value: int) -> int:
        if not MIN_VCPUS <= value <= MAX_VCPUS:
            raise PydanticCustomError(
                "lab_invalid",
                "{message}",
                {"message": f"vcpus must be between {MIN_VCPUS} and {MAX_VCPUS}, got {value}"},
            )
        return value

    @field_validator("memory_mib")
    @classmethod
    def _check_memory(cls, value: int) -> int:
        if not MIN_MEMORY_MIB <= value <= MAX_MEMORY_MIB:
            raise PydanticCustomError(
                "lab_invalid",
                "{message}",
                {
                    "message": f"memoryMiB must be between {MIN_MEMORY_MIB} and "
                    f"{MAX_MEMORY_MIB}, got {value}"
                },
            )
        return value


def resolve_size(size: str | VmSize) -> VmSize:
    """The vCPUs and memory of a size name or a custom size.

    Raises `InvalidInput` (code ``InvalidParameter``, target ``vmSize``) for an unknown name.
    """
    if isinstance(size, VmSize):
        return size
    row = lookup_size(size)
    if row is None:
        raise InvalidInput(unknown_size_message(size), target="vmSize")
    return VmSize(vcpus=row.vcpus, memory_mib=row.memory_mib)
