"""Admin passwords as the lab keeps them: only as SHA-512 crypt hashes.

A password's plain text is checked (`lab.domain.names.validate_admin_password`) and hashed
where it arrives (an API PUT, a lab file); from then on the lab holds the hash, in the form
``/etc/shadow`` takes (``$6$<salt>$<86 characters>``, as ``openssl passwd -6``, glibc's and
busybox's crypt make it): scale-set models in the state file, the tiny guest's per-VM initrd,
the debian guest's config disk. The guests put the hash into ``/etc/shadow`` as it is.
"""

from __future__ import annotations

import re
from typing import Final

_SALT_AND_HASH: Final = r"[./0-9A-Za-z]{1,16}\$[./0-9A-Za-z]{86}"
PASSWORD_HASH: Final = re.compile(rf"\$6\$(?:rounds=[0-9]{{1,9}}\$)?{_SALT_AND_HASH}")


def is_password_hash(value: str) -> bool:
    """Whether `value` is one SHA-512 crypt hash (nothing else: no line break, no ':')."""
    return PASSWORD_HASH.fullmatch(value) is not None
