"""Reference solution: from the (initramfs) shell, mount the real root, fix grub.cfg."""

from lab.client.grub import wait_for_reboot
from lab.client.session import ConsoleSession
from lab.domain.scenario import VmControls

PROMPT = r"\(initramfs\) "
FIX = [
    # The root device never showed up, so nothing has loaded ext4 yet: name the type.
    "mount -t ext4 /dev/vda1 /root",
    # The initramfs has no sed or grep (no busybox): borrow the real system's.
    "chroot /root sed -i 's| root=/dev/vda9 rootdelay=3||' /boot/grub/grub.cfg",
    "! chroot /root grep -q 'root=/dev/vda9' /boot/grub/grub.cfg",
    "umount /root",
]


def solve(session: ConsoleSession, vm: VmControls) -> None:
    session.sendline()
    session.expect(PROMPT, timeout=300)
    for command in FIX:
        session.run_ok(command)
    session.sendline("reboot -f")
    wait_for_reboot(session)
