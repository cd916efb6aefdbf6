"""Shared-access signatures for boot-diagnostics blobs, in Azure Storage's service-SAS shape
(`sv`, `sr=b`, `sp=r`, `st`, `se`, `spr=https`, `sig`), signed with a per-account key derived
from the lab's storage secret (`<data dir>/tls/storage-signing.key`, mode 0600).

The signature covers the permissions, times, protocol and the blob's canonical name, so any
edit of the URI (another blob, a later expiry, a changed signature) fails verification.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from lab.api.azure.errors import AuthorizationPermissionMismatch, SasRejected

SAS_VERSION = "2021-08-06"
_TIME = "%Y-%m-%dT%H:%M:%SZ"


def account_key(secret: bytes, account: str) -> bytes:
    return hmac.new(secret, f"storage-account:{account.lower()}".encode(), hashlib.sha256).digest()


def _signature(key: bytes, fields: dict[str, str], account: str, container: str, blob: str) -> str:
    resource = f"/blob/{account}/{container}/{blob}"
    parts = [fields["sp"], fields["st"], fields["se"], resource, fields["spr"], fields["sv"],
             fields["sr"]]  # fmt: skip
    digest = hmac.new(key, "\n".join(parts).encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def sign(
    secret: bytes, account: str, container: str, blob: str, *, minutes: int,
    now: datetime | None = None,
) -> str:  # fmt: skip
    """The query string (without `?`) granting read of one blob for `minutes`."""
    now = now or datetime.now(UTC)
    fields = {
        "sv": SAS_VERSION, "sr": "b", "sp": "r", "spr": "https",
        # Azure's own clients start a SAS a little in the past to absorb clock skew.
        "st": (now - timedelta(minutes=5)).strftime(_TIME),
        "se": (now + timedelta(minutes=minutes)).strftime(_TIME),
    }  # fmt: skip
    fields["sig"] = _signature(account_key(secret, account), fields, account, container, blob)
    return urlencode(fields)


def verify(
    secret: bytes, account: str, container: str, blob: str, query: dict[str, str],
    now: datetime | None = None,
) -> None:  # fmt: skip
    """Accept a SAS query for reading this blob, or raise SasRejected with Azure's wording."""
    now = now or datetime.now(UTC)
    generic = (
        "Server failed to authenticate the request. Make sure the value of Authorization "
        "header is formed correctly including the signature."
    )
    missing = [k for k in ("sv", "sr", "sp", "st", "se", "spr", "sig") if not query.get(k)]
    if missing:
        raise SasRejected(f"{generic} Missing SAS field(s): {', '.join(missing)}.",
                          target="sig")  # fmt: skip
    expected = _signature(account_key(secret, account), query, account, container, blob)
    if not hmac.compare_digest(expected.encode(), query["sig"].encode()):
        raise SasRejected(
            f"{generic} Signature did not match. String to sign used was "
            f"{query['sp']}\\n{query['st']}\\n{query['se']}\\n/blob/{account}/{container}/{blob}"
            f"\\n{query['spr']}\\n{query['sv']}\\n{query['sr']}",
            target="sig",
        )
    try:
        start = datetime.strptime(query["st"], _TIME).replace(tzinfo=UTC)
        expiry = datetime.strptime(query["se"], _TIME).replace(tzinfo=UTC)
    except ValueError:
        raise SasRejected(f"{generic} Signed start or expiry time is malformed.",
                          target="se") from None  # fmt: skip
    if now >= expiry:
        raise SasRejected(
            f"{generic} Signed expiry time [{expiry:%a, %d %b %Y %H:%M:%S GMT}] must be after "
            f"signed start time [{start:%a, %d %b %Y %H:%M:%S GMT}] and current time "
            f"[{now:%a, %d %b %Y %H:%M:%S GMT}].",
            target="se",
        )
    if now < start:
        raise SasRejected(f"{generic} The SAS is not valid before {start:%Y-%m-%dT%H:%M:%SZ}.",
                          target="st")  # fmt: skip
    if "r" not in query["sp"]:
        raise AuthorizationPermissionMismatch("This request is not authorized to perform this "
                                              "operation using this permission.")  # fmt: skip
