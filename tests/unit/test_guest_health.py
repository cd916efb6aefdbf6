"""Hang signs on a guest's console: the kernel's soft-lockup and RCU-stall lines set a warning,
a login prompt or a new boot clears it, and a line cut between two reads counts once."""

from __future__ import annotations

import pytest

from lab.domain.guest_health import HangWatch, hang_meaning

LOCKUP = b"[  250.117] watchdog: BUG: soft lockup - CPU#0 stuck for 224s! [dbus-daemon:201]\r\n"
RCU = (b"[  300.2] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\r\n"
       b"[  300.3] rcu: rcu_preempt kthread starved for 68269 jiffies! g1341 f0x0\r\n")  # fmt: skip


def test_a_soft_lockup_line_sets_a_warning_with_the_line_and_its_time() -> None:
    watch = HangWatch()
    watch.feed(b"Debian GNU/Linux 12\r\n", now=10.0)
    assert watch.warning is None
    watch.feed(LOCKUP, now=11.0)
    assert watch.warning is not None
    assert watch.warning.line == ("watchdog: BUG: soft lockup - CPU#0 stuck for 224s! "
                                  "[dbus-daemon:201]")  # fmt: skip
    assert watch.warning.since == 11.0
    assert watch.warning.message.startswith("the guest is hung: a soft lockup (watchdog:")


def test_more_signs_keep_the_first_time_and_count_every_line() -> None:
    watch = HangWatch()
    watch.feed(LOCKUP, now=1.0)
    watch.feed(RCU, now=5.0)
    assert watch.warning is not None
    assert (watch.warning.since, watch.warning.last, watch.warning.count) == (1.0, 5.0, 3)
    assert hang_meaning(watch.warning.line) == "an RCU stall"


def test_a_line_cut_between_two_reads_is_matched_once() -> None:
    watch = HangWatch()
    for i in range(0, len(LOCKUP), 7):
        watch.feed(LOCKUP[i : i + 7], now=float(i))
    assert watch.warning is not None
    assert watch.warning.count == 1
    assert watch.warning.line.startswith("watchdog: BUG: soft lockup - CPU#0")


ALIVE = [b"\r\nvm1 login: ", b"  Booting `Debian GNU/Linux'\r\n",
         b"[    0.0] Linux version 6.1.0-57-cloud-amd64\r\n"]  # fmt: skip


@pytest.mark.parametrize("alive", ALIVE)
def test_a_login_prompt_or_a_new_boot_clears_the_warning(alive: bytes) -> None:
    watch = HangWatch()
    watch.feed(LOCKUP, now=1.0)
    watch.feed(alive, now=2.0)
    assert watch.warning is None


def test_a_login_prompt_printed_before_the_sign_does_not_clear_it() -> None:
    watch = HangWatch()
    watch.feed(b"vm1 login: " + LOCKUP, now=1.0)
    assert watch.warning is not None


def test_clear_forgets_the_warning_and_what_was_already_read() -> None:
    watch = HangWatch()
    watch.feed(LOCKUP, now=1.0)
    watch.clear()
    assert watch.warning is None
    watch.feed(b"all good\r\n", now=2.0)
    assert watch.warning is None
