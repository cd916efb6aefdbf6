"""Azure Storage's Shared Key authorization for blob reads: the account keys `listKeys`
answers, and the `Authorization: SharedKey <account>:<signature>` check.

The keys are derived from the lab's storage secret, the account, the key's name and how often
it was regenerated, so `regenerateKey` invalidates the old key without storing any key.

The string to sign is Azure's (Storage services version 2009-09-19 and later): the verb, eleven
standard headers, the `x-ms-*` headers, and the canonical resource, `/<account><path>` plus
the query parameters. Path-style URLs (`https://127.0.0.1:8443/<account>/<container>/<blob>`,
as `azure-storage-blob` signs them for an IP host, and as Azurite serves) put the account in
the path too, so it appears twice.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import parse_qsl, unquote

from lab.api.azure.errors import SharedKeyRejected
from lab.domain.resource_ids import same

KEY_NAMES = ("key1", "key2")
_STANDARD_HEADERS = ("content-encoding", "content-language", "content-length", "content-md5",
                     "content-type", "date", "if-modified-since", "if-match", "if-none-match",
                     "if-unmodified-since", "range")  # fmt: skip


def account_key(secret: bytes, account: str, key_name: str, generation: int) -> str:
    """The base64 account key `listKeys` shows (64 bytes, as Azure's)."""
    material = f"shared-key:{account.lower()}:{key_name}:{generation}".encode()
    digest = hmac.new(secret, material, hashlib.sha512).digest()
    return base64.b64encode(digest).decode()


def string_to_sign(method: str, headers: Mapping[str, str], account: str, raw_path: str,
                   query: str) -> str:  # fmt: skip
    values = [headers.get(h, "") for h in _STANDARD_HEADERS]
    if values[2] == "0":  # a zero Content-Length is signed as empty
        values[2] = ""
    ms = sorted((k.lower(), v) for k, v in headers.items() if k.lower().startswith("x-ms-"))
    canonical_headers = "".join(f"{k}:{v.strip()}\n" for k, v in ms)
    resource = f"/{account}{raw_path}"
    params: dict[str, list[str]] = {}
    for k, v in parse_qsl(query, keep_blank_values=True):
        params.setdefault(k.lower(), []).append(unquote(v))
    resource += "".join(f"\n{k}:{','.join(sorted(v))}" for k, v in sorted(params.items()))
    return f"{method.upper()}\n" + "\n".join(values) + "\n" + canonical_headers + resource


def verify(authorization: str, keys: list[str], method: str, headers: Mapping[str, str],
           account: str, raw_path: str, query: str) -> None:  # fmt: skip
    """Accept a SharedKey signature made with any of `keys`, or raise SharedKeyRejected."""
    scheme, _, credential = authorization.partition(" ")
    name, _, signature = credential.strip().partition(":")
    if scheme != "SharedKey" or not signature:
        raise SharedKeyRejected("Server failed to authenticate the request. The Authorization "
                                "header must be 'SharedKey <account>:<signature>'.")  # fmt: skip
    if not same(name, account):
        raise SharedKeyRejected(f"Server failed to authenticate the request. The account "
                                f"'{name}' of the Authorization header is not "
                                f"'{account}'.")  # fmt: skip
    if not (headers.get("x-ms-date") or headers.get("date")):
        raise SharedKeyRejected("Server failed to authenticate the request. The request has "
                                "neither an x-ms-date nor a Date header.")  # fmt: skip
    text = string_to_sign(method, headers, name, raw_path, query).encode()
    try:
        given = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        given = b""
    for key in keys:
        expected = hmac.new(base64.b64decode(key), text, hashlib.sha256).digest()
        if hmac.compare_digest(expected, given):
            return
    raise SharedKeyRejected(
        "Server failed to authenticate the request. Make sure the value of Authorization header "
        "is formed correctly including the signature.")  # fmt: skip
