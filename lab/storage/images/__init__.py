"""Guest images: recipes under ``images/``, their builders, and the cache of built images.

`ImageCache` builds an image once per content hash and finds it again in milliseconds. A VM's
own settings (host name, admin user) reach its guest through `write_guest_config_initrd` (a
per-VM initrd, for kernel-boot images such as tiny) or `write_guest_config_disk` (a small
config disk, for disk-boot images such as debian), both of which take the password as
`hash_password` makes it.
"""

from lab.storage.images.cache import ImageCache, ImageManifest
from lab.storage.images.configdisk import CONFIG_DISK_FILE, write_guest_config_disk
from lab.storage.images.guestconfig import hash_password, write_guest_config_initrd

__all__ = [
    "CONFIG_DISK_FILE",
    "ImageCache",
    "ImageManifest",
    "hash_password",
    "write_guest_config_disk",
    "write_guest_config_initrd",
]
