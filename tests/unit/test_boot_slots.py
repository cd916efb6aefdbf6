"""Boot slots: a slot is held from power-on until the console shows the boot is over."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lab.services.boot_slots import BootSlots


def _print(log: Path, text: str) -> None:
    with log.open("ab") as f:
        f.write(text.encode())


async def _on() -> None:
    """A power-on that succeeds at once."""


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0.3)  # the watchers read every 0.25 s


@pytest.fixture
def logs(tmp_path: Path) -> dict[str, Path]:
    return {name: tmp_path / f"{name}.log" for name in ("a", "b", "c")}


def test_a_second_boot_waits_for_the_first_to_reach_its_login_prompt(
    logs: dict[str, Path],
) -> None:
    async def run() -> None:
        slots = BootSlots(size=1)
        powered: list[str] = []

        async def on(name: str) -> None:
            powered.append(name)

        await slots.boot("a", logs["a"], lambda: on("a"))
        second = asyncio.create_task(slots.boot("b", logs["b"], lambda: on("b")))
        _print(logs["a"], "[    0.000000] Linux version 6.1\r\n")
        await _settle()
        assert powered == ["a"] and not second.done()  # a still boots: b waits
        _print(logs["a"], "Debian GNU/Linux 12 a ttyS0\r\n\r\na login: ")
        await asyncio.wait_for(second, 2)
        assert powered == ["a", "b"] and slots.booting == ["b"]

    asyncio.run(run())


@pytest.mark.parametrize("end", [
    "Give root password for maintenance\r\n",
    "---[ end Kernel panic - not syncing: VFS: Unable to mount root fs ]---\r\n",
    "grub> ",
    "lab-boot[412]: lab: boot finished\r\n",
    "watchdog: BUG: soft lockup - CPU#0 stuck for 23s! [swapper/0:1]\r\n",
])  # fmt: skip
def test_a_broken_boot_lets_its_slot_go_where_it_stops(logs: dict[str, Path], end: str) -> None:
    async def run() -> None:
        slots = BootSlots(size=1)
        await slots.boot("a", logs["a"], _on)
        _print(logs["a"], "Booting `Debian GNU/Linux'\r\n" + end)
        await asyncio.wait_for(slots.booted("a"), 2)
        assert slots.booting == []

    asyncio.run(run())


def test_what_an_earlier_boot_printed_does_not_count(logs: dict[str, Path]) -> None:
    async def run() -> None:
        _print(logs["a"], "a login: ")  # the boot before this one
        slots = BootSlots(size=1)
        await slots.boot("a", logs["a"], _on)
        await _settle()
        assert slots.booting == ["a"]
        slots.release("a")

    asyncio.run(run())


def test_a_vm_that_boots_again_keeps_its_one_slot(logs: dict[str, Path]) -> None:
    async def run() -> None:
        slots = BootSlots(size=2)
        await slots.boot("a", logs["a"], _on)
        await slots.boot("a", logs["a"], _on)  # a reset during the boot
        await asyncio.wait_for(slots.boot("b", logs["b"], _on), 1)
        assert slots.booting == ["a", "b"]

    asyncio.run(run())


def test_a_stop_or_the_timeout_frees_the_slot(logs: dict[str, Path]) -> None:
    async def run() -> None:
        slots = BootSlots(size=1, timeout=0.5)
        await slots.boot("a", logs["a"], _on)
        slots.release("a")  # powered off
        await asyncio.wait_for(slots.boot("b", logs["b"], _on), 1)
        await asyncio.wait_for(slots.boot("c", logs["c"], _on), 2)
        assert slots.booting == ["c"]  # b printed nothing: its slot timed out

    asyncio.run(run())


def test_a_power_on_that_fails_gives_its_slot_back(logs: dict[str, Path]) -> None:
    async def run() -> None:
        slots = BootSlots(size=1)

        async def fails() -> None:
            raise RuntimeError("libvirt said no")

        with pytest.raises(RuntimeError):
            await slots.boot("a", logs["a"], fails)
        await asyncio.wait_for(slots.boot("b", logs["b"], _on), 1)

    asyncio.run(run())
