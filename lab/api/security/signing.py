"""The RSA keys the lab's authority signs access tokens with (RS256), and their rotation.

Keys live in `<data dir>/tls/token-keys/<kid>.pem` (mode 0600, in a 0700 directory); the
newest signs. `lab auth rotate-key` adds a new one: the old key stays published in the JWKS
and keeps verifying for `overlap_s` (tokens it signed may live that long), then the next
rotation deletes it. The daemon notices a rotation made by the CLI by the directory's mtime,
at the next token it signs or the first token it sees signed with the new key.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from lab.api.security.files import private_dir, private_file


def _b64url_uint(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: rsa.RSAPrivateKey
    created: float

    @property
    def public(self) -> rsa.RSAPublicKey:
        return self.private.public_key()

    def jwk(self) -> dict[str, Any]:
        numbers = self.public.public_numbers()
        return {"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
                "x5t": self.kid, "n": _b64url_uint(numbers.n),
                "e": _b64url_uint(numbers.e)}  # fmt: skip


def _kid(key: rsa.RSAPrivateKey) -> str:
    """The key's id: base64url of the SHA-1 of its public key (x5t-like, stable)."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA1())
    digest.update(der)
    return base64.urlsafe_b64encode(digest.finalize()).rstrip(b"=").decode()


class KeySet:
    """The authority's signing keys in one directory, reloaded when it changes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._keys: list[SigningKey] = []
        self._mtime_ns = -1

    def _refresh(self) -> None:
        private_dir(self.directory)
        mtime = self.directory.stat().st_mtime_ns
        if mtime == self._mtime_ns and self._keys:
            return
        keys = []
        for path in self.directory.glob("*.pem"):
            private_file(path)
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            assert isinstance(key, rsa.RSAPrivateKey), f"{path} is not an RSA key"
            keys.append(SigningKey(_kid(key), key, path.stat().st_mtime))
        self._keys = sorted(keys, key=lambda k: k.created)
        self._mtime_ns = mtime
        if not self._keys:
            self._add_key()

    def current(self) -> SigningKey:
        self._refresh()
        return self._keys[-1]

    def published(self) -> list[SigningKey]:
        self._refresh()
        return list(self._keys)

    def find(self, kid: str) -> SigningKey | None:
        self._refresh()
        return next((k for k in self._keys if k.kid == kid), None)

    def sign(self, claims: dict[str, Any]) -> str:
        """An RS256 JWT of `claims`, signed with the current key and naming it (`kid`)."""
        signer = self.current()
        return jwt.encode(claims, signer.private, algorithm="RS256",
                          headers={"kid": signer.kid, "x5t": signer.kid})  # fmt: skip

    def decode(self, token: str, audience: str | list[str],
               require: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
        """The claims of a JWT one of the published keys signed (found by `kid`), for
        `audience`; jwt's own errors otherwise (a key rotated away is a bad signature)."""
        kid = str(jwt.get_unverified_header(token).get("kid", ""))
        signer = self.find(kid)
        if signer is None:
            raise jwt.InvalidSignatureError(f"Signature verification failed: no signing key "
                                            f"{kid!r} (rotated away?)")  # fmt: skip
        claims: dict[str, Any] = jwt.decode(token, signer.public, algorithms=["RS256"],
                                            audience=audience,
                                            options={"require": list(require)})  # fmt: skip
        return claims

    def rotate(self, *, overlap_s: float) -> SigningKey:
        """A new signing key; keys retired more than `overlap_s` ago are deleted."""
        self._refresh()
        now = time.time()
        # A key is retired when the next one was made; it may still verify for overlap_s.
        for older, newer in zip(self._keys, [*self._keys[1:], None], strict=True):
            retired_at = newer.created if newer else now
            if now - retired_at >= overlap_s:
                (self.directory / f"{older.kid}.pem").unlink(missing_ok=True)
        return self._add_key()

    def _add_key(self) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
        kid = _kid(key)
        fd = os.open(self.directory / f"{kid}.pem", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        self._mtime_ns = -1
        self._refresh()
        return self.current()
