"""Guest images: recipes under ``images/``, their builders, and the cache of built images.

`ImageCache` builds an image once per content hash and finds it again in milliseconds;
`write_guest_config_initrd` makes a VM's own initrd (host name, admin user) from a cached one.
"""

from lab.storage.images.cache import ImageCache, ImageManifest
from lab.storage.images.guestconfig import write_guest_config_initrd

__all__ = ["ImageCache", "ImageManifest", "write_guest_config_initrd"]
