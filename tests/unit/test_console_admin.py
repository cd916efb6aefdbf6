"""SysRq and NMI as console operations, over the fake hypervisor: keys, BREAK, refusals, audit."""

from __future__ import annotations

import pytest

from lab.domain.errors import InvalidInput, StateError
from lab.domain.sysrq import KEY_LEFTALT, KEY_SYSRQ, KEYCODES, parse_sysrq_keys
from lab.hypervisor.fake import FakeHypervisor
from lab.services.consoles import SysRqMethod
from lab.services.lab import Lab
from tests.unit.fakelab import new_vm, run


def test_keycodes_are_linux_input_codes() -> None:
    assert (KEYCODES["q"], KEYCODES["a"], KEYCODES["z"], KEYCODES["h"]) == (16, 30, 44, 35)
    assert (KEYCODES["1"], KEYCODES["9"], KEYCODES["0"]) == (2, 10, 11)


@pytest.mark.parametrize("bad", ["", "  ", "h!", "y", "a" * 17, "ré"])
def test_bad_sysrq_keys_are_refused_with_what_is_allowed(bad: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_sysrq_keys(bad)
    assert err.value.target == "keys"


def test_sysrq_sequence_by_sendkey_and_by_break(lab: Lab, hv: FakeHypervisor) -> None:
    async def scenario() -> None:
        view = await lab.vms.create(new_vm())
        domain = view.identity.domain_name
        assert await lab.consoles.sysrq(view, "REIS", user="amy") == "reis"
        assert hv._get(domain).keys == [[KEY_LEFTALT, KEY_SYSRQ, KEYCODES[k]] for k in "reis"]
        await lab.consoles.sysrq(view, "h", method=SysRqMethod.BREAK)
        assert hv.breaks_sent(domain) == 1
        assert hv.console_input(domain).endswith(b"h")  # the key follows the BREAK on the line
        await lab.consoles.nmi(view, user="amy")
        assert hv.nmis_injected(domain) == 1
        events = [(e["event"], e["user"]) for e in lab.consoles.audit.entries()]
        assert ("sysrq", "amy") in events and ("nmi", "amy") in events

    run(lab, scenario)


def test_sysrq_refused_for_windows_and_when_not_running(lab: Lab) -> None:
    async def scenario() -> None:
        windows = await lab.vms.create(new_vm("win1", os_type="Windows"))
        with pytest.raises(InvalidInput, match="only send a SysRq to a Linux VM"):
            await lab.consoles.sysrq(windows, "h")
        await lab.consoles.nmi(windows)  # NMI is fine on Windows
        stopped = await lab.vms.create(new_vm("vm2"), start=False)
        for op in (lab.consoles.sysrq(stopped, "h"), lab.consoles.nmi(stopped)):
            with pytest.raises(StateError):
                await op

    run(lab, scenario)
