#!/bin/sh
# mmdebstrap --customize-hook of the `debian` image. It runs on the build host once every package
# is installed; $1 is the guest's root (mmdebstrap has set up its /proc, /sys and /dev). The lab's
# builder (lab/storage/images/debian.py) sets:
#   LAB_STAGING     files to copy over the root: the generated /etc files (fstab, default/grub,
#                   hostname, hosts) and this recipe's rootfs/ directory
#   LAB_ROOT_UUID   the UUID the root file system will have (the disk does not exist yet)
#   LAB_GRUB_PROBE  a stand-in for grub-probe that answers for that disk
#   LAB_ENABLE      units to enable, LAB_MASK units to mask (space-separated)
#   LAB_PACKAGES_OUT  where to list the installed packages (name version)
#   LAB_ESP_OUT     where to put the EFI system partition's files (the builder makes the FAT)
set -eu
root=$1

echo "lab: copying the lab's files into the guest"
cp -a "$LAB_STAGING/." "$root/"

echo "lab: enabling $LAB_ENABLE"
# shellcheck disable=SC2086 # lists of unit names
chroot "$root" systemctl enable $LAB_ENABLE
echo "lab: masking units a lab VM does not need"
# shellcheck disable=SC2086
chroot "$root" systemctl mask $LAB_MASK

# grub-mkconfig asks grub-probe about the disk holding / and /boot, which does not exist yet: a
# stand-in answers /dev/vda1, ext2, msdos and the future UUID, and nothing for BIOS hints (a hint
# GRUB cannot resolve makes it print "no such device" and wait on every boot). Debian's 10_linux
# writes root=UUID=... only if /dev/disk/by-uuid/UUID exists (test -e follows the link, so it
# points at /dev/null for the run); in root mode the chroot's /dev is a directory of mknod'ed
# nodes, not the host's /dev.
echo "lab: writing /boot/grub/grub.cfg"
if mountpoint -q "$root/dev"; then
    echo "lab: $root/dev is a mount point; refusing to add links to it" >&2
    exit 1
fi
probe=$root/usr/sbin/grub-probe
mv "$probe" "$probe.lab-real"
cp "$LAB_GRUB_PROBE" "$probe"
chmod 0755 "$probe"
mkdir -p "$root/dev/disk/by-uuid"
ln -s ../../null "$root/dev/disk/by-uuid/$LAB_ROOT_UUID"
chroot "$root" grub-mkconfig -o /boot/grub/grub.cfg 2>&1
rm "$root/dev/disk/by-uuid/$LAB_ROOT_UUID"
rmdir "$root/dev/disk/by-uuid" "$root/dev/disk"
mv "$probe.lab-real" "$probe"

echo "lab: GRUB modules and core image"
# What grub-install would put in /boot/grub/i386-pc, and core.img made by the guest's own
# grub-mkimage: it finds /boot/grub on the first partition of the first BIOS disk.
mkdir -p "$root/boot/grub/i386-pc"
cp "$root"/usr/lib/grub/i386-pc/*.mod "$root"/usr/lib/grub/i386-pc/*.lst \
    "$root/usr/lib/grub/i386-pc/boot.img" "$root/boot/grub/i386-pc/"
chroot "$root" grub-mkimage -O i386-pc -o /boot/grub/i386-pc/core.img \
    -p '(hd0,msdos1)/boot/grub' biosdisk part_msdos ext2
chroot "$root" grub-editenv /boot/grub/grubenv create

echo "lab: GRUB for UEFI (generation 2 VMs)"
# The same /boot/grub and grub.cfg as the BIOS GRUB: the EFI image's embedded configuration
# finds the root file system by UUID and sets the prefix there, and its modules live in
# /boot/grub/x86_64-efi as grub-install would put them. The image goes to the ESP twice: at the
# removable-media path, which OVMF boots with no boot entry in its NVRAM (a new VM has none),
# and at Debian's own path, which a trainee can boot by hand from the firmware's menu or shell.
mkdir -p "$root/boot/grub/x86_64-efi" "$root/boot/efi" "$LAB_ESP_OUT/EFI/BOOT" \
    "$LAB_ESP_OUT/EFI/debian"
cp "$root"/usr/lib/grub/x86_64-efi/*.mod "$root"/usr/lib/grub/x86_64-efi/*.lst \
    "$root/boot/grub/x86_64-efi/"
printf 'search.fs_uuid %s root\nset prefix=($root)/boot/grub\n' "$LAB_ROOT_UUID" \
    >"$root/boot/grub/x86_64-efi/load.cfg"
chroot "$root" grub-mkimage -O x86_64-efi -o /boot/grub/x86_64-efi/grubx64.efi \
    -c /boot/grub/x86_64-efi/load.cfg -p /boot/grub \
    part_msdos ext2 fat search_fs_uuid normal configfile
cp "$root/boot/grub/x86_64-efi/grubx64.efi" "$LAB_ESP_OUT/EFI/debian/grubx64.efi"
cp "$root/boot/grub/x86_64-efi/grubx64.efi" "$LAB_ESP_OUT/EFI/BOOT/BOOTX64.EFI"

echo "lab: cleaning up"
# Made per VM at its first boot (lab-ssh-host-keys.service), never shared between VMs.
rm -f "$root"/etc/ssh/ssh_host_*
# The build host's, copied in by mmdebstrap for the build; the guest has no network.
rm -f "$root/etc/resolv.conf"
chroot "$root" dpkg-query -W -f '${Package} ${Version}\n' >"$LAB_PACKAGES_OUT"
echo "lab: $(wc -l <"$LAB_PACKAGES_OUT") packages installed"
