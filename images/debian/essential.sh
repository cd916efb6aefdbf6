#!/bin/sh
# mmdebstrap --essential-hook of the `debian` image. It runs on the build host after the
# Essential: yes packages are installed and before the recipe's packages; $1 is the guest's root.
# The lab's builder (lab/storage/images/debian.py) sets LAB_STAGING: the files it generated.
set -eu
root=$1

echo "lab: preseeding grub-pc"
# grub-pc would ask which disks to write its boot sector to; there are none yet (the builder
# writes boot.img and core.img into the finished disk itself).
echo 'grub-pc grub-pc/install_devices_empty boolean true' | chroot "$root" debconf-set-selections

echo "lab: initramfs configuration"
# In place before the kernel package's postinst builds the initrd, so it is built once, small.
mkdir -p "$root/etc/initramfs-tools/conf.d" "$root/usr/share/initramfs-tools/modules.d"
cp "$LAB_STAGING/etc/initramfs-tools/conf.d/lab.conf" "$root/etc/initramfs-tools/conf.d/lab.conf"
cp "$LAB_STAGING/usr/share/initramfs-tools/modules.d/lab.conf" \
    "$root/usr/share/initramfs-tools/modules.d/lab.conf"
