"""Finding the `linux` line on GRUB's editor screen as it is drawn over the serial port."""

from __future__ import annotations

import pytest

from lab.client.grub import linux_line_index

# As captured from the debian image's GRUB (rows 5.., a long line continued after a `\`).
SCREEN = (
    "\x1b[?25l\x1b[5;3Hsetparams 'Debian GNU/Linux'   \x1b[6;3H    \x1b[7;3H        load_video"
    "\x1b[8;3H        insmod gzio\x1b[9;3H        if [ x$grub_platform = xxen ]; then fi"
    "\x1b[10;3H        insmod part_msdos\x1b[11;3H        insmod ext2"
    "\x1b[12;3H        search --no-floppy --fs-uuid --set=root 7c0f74af-c7dc-4ef7-be26-71f\\\r\n"
    "\r\x1b[13;3H914dc8556   \x1b[14;3H        echo        'Loading Linux 6.1.0 ...'"
    "\x1b[15;3H        linux        /boot/vmlinuz-6.1.0 root=UUID=7c0f74af-\\\r\n"
    "\r\x1b[16;3Hc7dc ro console=ttyS0,115200n8 quiet\x1b[5;80H \x1b[16;80Hv\x1b[5;3H"
)


def test_the_linux_line_is_counted_in_logical_lines() -> None:
    assert linux_line_index(SCREEN) == 9  # the wrapped `search` line counts once


def test_a_screen_without_a_linux_line_is_an_error() -> None:
    with pytest.raises(ValueError, match="no `linux` line"):
        linux_line_index("\x1b[5;3Hsetparams 'x'\x1b[6;3H    insmod ext2")
