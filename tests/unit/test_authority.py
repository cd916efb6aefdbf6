"""The lab's sign-in authority over the ASGI app: discovery, every grant, OAuth errors with
AADSTS codes, `expires_in`, key rotation with an overlap, and roles read at every request
(a deleted assignment or principal counts at once). The real MSAL clients (the Azure CLI,
azure-identity) are driven in tests/integration/test_azure_cli.py."""

from __future__ import annotations

import datetime
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.api.azure.app import create_azure_app
from lab.api.azure.authority import ASSERTION_TYPE, DEVICE_CODE_GRANT, b64url
from lab.api.security.signing import KeySet
from lab.domain.errors import LabFileError
from lab.domain.identity import TENANT_ID
from lab.services.lab import Lab
from tests.unit.fakelab import SUBSCRIPTION, new_vm, run

KEY, STORAGE = b"k" * 32, b"s" * 32
BASE = "https://lab.test"
TOKEN = f"{BASE}/adfs/oauth2/token"
ARM_SCOPE = "https://management.azure.com//.default"
VM1 = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg1/providers/Microsoft.Compute"
       "/virtualMachines/vm1?api-version=2024-07-01")  # fmt: skip
SUB = f"/subscriptions/{SUBSCRIPTION}"


def client_of(lab: Lab) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_azure_app(lab, KEY, STORAGE))
    return httpx.AsyncClient(transport=transport, base_url=BASE)


async def with_vm1(lab: Lab) -> None:
    await lab.vms.create(new_vm())


async def post_token(c: httpx.AsyncClient, **form: str) -> httpx.Response:
    return await c.post("/adfs/oauth2/token", data=form)


def bearer(r: httpx.Response) -> dict[str, str]:
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_discovery_and_keys_are_what_msal_reads(lab: Lab) -> None:
    async def body() -> None:
        async with client_of(lab) as c:
            oidc = (await c.get("/adfs/.well-known/openid-configuration")).json()
            assert oidc["issuer"] == f"{BASE}/adfs" and oidc["token_endpoint"] == TOKEN
            assert oidc["device_authorization_endpoint"] == f"{BASE}/adfs/oauth2/devicecode"
            keys = (await c.get("/adfs/discovery/keys")).json()["keys"]
            assert [k["kty"] for k in keys] == ["RSA"] and keys[0]["alg"] == "RS256"
            # `az cloud register --endpoint-resource-manager https://host/` asks for '//metadata'
            doubled = httpx.URL(BASE).copy_with(raw_path=b"//metadata/endpoints?api-version=1")
            meta = (await c.get(doubled)).json()
            assert meta["authentication"]["loginEndpoint"] == f"{BASE}/adfs"
            assert meta["resourceManager"] == f"{BASE}/"
            assert meta["authentication"]["audiences"][0] == "https://management.azure.com/"

    run(lab, body)


def test_client_secret_grant_and_roles_read_at_every_request(lab: Lab) -> None:
    sp, secret = lab.identity.create_sp_for_rbac("app1", [("Reader", f"{SUB}/resourceGroups/rg1")])
    assert secret is not None and secret not in str(lab.identity.app(str(sp.app_id)))

    async def body() -> None:
        await with_vm1(lab)
        async with client_of(lab) as c:
            r = await post_token(c, grant_type="client_credentials", client_id=str(sp.app_id),
                                 client_secret=secret, scope=ARM_SCOPE)  # fmt: skip
            assert r.json()["expires_in"] == 3600 and "refresh_token" not in r.json()
            claims = jwt.decode(r.json()["access_token"], options={"verify_signature": False})
            assert claims["exp"] - claims["iat"] == 3600 and "roles" not in claims
            assert claims["oid"] == sp.object_id and claims["tid"] == TENANT_ID
            headers = bearer(r)
            assert (await c.get(VM1, headers=headers)).status_code == 200
            restart = VM1.replace("?", "/restart?")
            denied = await c.post(restart, headers=headers)
            assert denied.status_code == 403 and denied.json()["error"]["code"] == (
                "AuthorizationFailed")
            # Granted now: the same token may restart on its next request.
            lab.identity.create_assignment(str(sp.app_id), "Virtual Machine Contributor", SUB)
            assert (await c.post(restart, headers=headers)).status_code == 202
            # Revoked: the same token is refused at once.
            lab.identity.delete_assignments(ref=str(sp.app_id))
            gone = await c.get(VM1, headers=headers)
            assert gone.status_code == 403
            lab.identity.remove(str(sp.app_id))
            removed = await c.get(VM1, headers=headers)
            assert removed.status_code == 401 and "no longer exists" in removed.text

    run(lab, body)


def test_oauth_errors_have_aadsts_codes(lab: Lab) -> None:
    sp, _secret = lab.identity.create_sp_for_rbac("app2", [("Reader", "/")])
    lab.identity.add_user("rita", "Rita-pass-1")

    async def body() -> None:
        async with client_of(lab) as c:
            cases: list[tuple[dict[str, str], int, str, int]] = [
                ({"grant_type": "client_credentials", "client_id": str(sp.app_id),
                  "client_secret": "wrong", "scope": ARM_SCOPE}, 401, "invalid_client", 7000215),
                ({"grant_type": "client_credentials", "client_id": str(uuid.uuid4()),
                  "client_secret": "x", "scope": ARM_SCOPE}, 400, "unauthorized_client", 700016),
                ({"grant_type": "password", "username": "rita", "password": "nope",
                  "client_id": "c", "scope": ARM_SCOPE}, 400, "invalid_grant", 50126),
                ({"grant_type": DEVICE_CODE_GRANT, "device_code": "unknown",
                  "client_id": "c"}, 400, "expired_token", 70020),
                ({"grant_type": "client_credentials", "client_id": str(sp.app_id),
                  "client_secret": "x", "scope": "https://vault.azure.net/.default"},
                 400, "invalid_resource", 500011),
                ({"grant_type": "implicit"}, 400, "unsupported_grant_type", 70003),
                ({"client_id": "c"}, 400, "invalid_request", 900144),
            ]  # fmt: skip
            for form, status, error, code in cases:
                r = await post_token(c, **form)
                assert (r.status_code, r.json()["error"]) == (status, error), (form, r.text)
                assert r.json()["error_codes"] == [code]
                assert r.json()["error_description"].startswith(f"AADSTS{code}: ")
            not_form = await c.post("/adfs/oauth2/token", json={"grant_type": "password"})
            assert not_form.status_code == 400 and not_form.json()["error"] == "invalid_request"

    run(lab, body)


def test_password_then_refresh_token_then_lifetime_setting(lab: Lab) -> None:
    lab.identity.add_user("uma", "Uma-pass-12")
    lab.identity.create_assignment("uma", "Reader", SUB)
    lab.settings.token_lifetime_minutes = 5

    async def body() -> None:
        await with_vm1(lab)
        async with client_of(lab) as c:
            r = await post_token(c, grant_type="password", username="uma", password="Uma-pass-12",
                                 client_id="04b07795-8ddb-461a-bbee-02f9e1bf7b46",
                                 scope=f"{ARM_SCOPE} offline_access openid profile")  # fmt: skip
            assert r.json()["expires_in"] == 300
            id_token = jwt.decode(r.json()["id_token"], options={"verify_signature": False})
            assert id_token["upn"] == "uma" and id_token["aud"].startswith("04b07795")
            assert (await c.get(VM1, headers=bearer(r))).status_code == 200
            again = await post_token(c, grant_type="refresh_token", client_id="x",
                                     refresh_token=r.json()["refresh_token"])  # fmt: skip
            assert (await c.get(VM1, headers=bearer(again))).status_code == 200
            # A refresh token is never an access token.
            as_access = {"Authorization": f"Bearer {r.json()['refresh_token']}"}
            assert (await c.get(VM1, headers=as_access)).status_code == 401

    run(lab, body)


def _self_signed() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "app")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))  # fmt: skip
    return key, cert


def test_certificate_assertions_rs256_and_ps256(lab: Lab) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    key, cert = _self_signed()
    sha1 = b64url(cert.fingerprint(hashes.SHA1()))
    pem = cert.public_bytes(Encoding.PEM).decode()
    sp, secret = lab.identity.create_sp_for_rbac("certapp", [("Reader", "/")],
                                                 certificate=(sha1, pem))  # fmt: skip
    assert secret is None
    other_key, _other = _self_signed()

    def assertion(signer: rsa.RSAPrivateKey, alg: str, header: dict[str, str],
                  **claims: Any) -> str:  # fmt: skip
        now = int(time.time())
        body = {"aud": TOKEN, "iss": sp.app_id, "sub": sp.app_id, "exp": now + 600, "iat": now,
                "jti": str(uuid.uuid4()), **claims}  # fmt: skip
        return jwt.encode(body, signer, algorithm=alg, headers=header)

    sha256 = b64url(cert.fingerprint(hashes.SHA256()))

    async def body() -> None:
        async with client_of(lab) as c:
            def form(a: str) -> dict[str, str]:
                return {"grant_type": "client_credentials", "client_id": str(sp.app_id),
                        "client_assertion_type": ASSERTION_TYPE, "client_assertion": a,
                        "scope": ARM_SCOPE}  # fmt: skip

            # MSAL pads x5t ('='); AD FS authorities get RS256 + x5t, Entra ID PS256 + x5t#S256.
            for a in (assertion(key, "RS256", {"x5t": sha1 + "="}),
                      assertion(key, "PS256", {"x5t#S256": sha256})):  # fmt: skip
                assert (await post_token(c, **form(a))).status_code == 200
            for a, words in (
                (assertion(other_key, "RS256", {"x5t": sha1}), "signature"),
                (assertion(key, "RS256", {"x5t": "AAAA"}), "key was not found"),
                (assertion(key, "RS256", {"x5t": sha1}, aud="https://elsewhere/"), "Audience"),
                (assertion(key, "RS256", {"x5t": sha1}, exp=int(time.time()) - 10), "expired"),
                (assertion(key, "RS256", {"x5t": sha1}, iss="someone"), "iss and sub"),
                ("not-a-jwt", "not a JWT"),
            ):
                r = await post_token(c, **form(a))
                assert r.status_code == 400 and r.json()["error"] == "invalid_client", r.text
                assert words in r.json()["error_description"], (words, r.text)

    run(lab, body)


def test_device_code_flow_pending_approved_expired(lab: Lab) -> None:
    user = lab.identity.add_user("dora", "Dora-pass-1")

    async def body() -> None:
        async with client_of(lab) as c:
            flow = (await c.post("/adfs/oauth2/devicecode",
                                 data={"client_id": "c", "scope": ARM_SCOPE})).json()  # fmt: skip
            assert flow["interval"] == 1 and flow["verification_uri"] == f"{BASE}/device"
            assert flow["user_code"] in flow["message"]
            poll = {"grant_type": DEVICE_CODE_GRANT, "device_code": flow["device_code"],
                    "client_id": "c"}  # fmt: skip
            pending = await post_token(c, **poll)
            assert pending.json()["error"] == "authorization_pending"
            page = await c.get("/device")
            assert page.status_code == 200 and 'name="code"' in page.text
            wrong = await c.post("/device", data={"code": flow["user_code"], "username": "dora",
                                                  "password": "bad"})  # fmt: skip
            assert wrong.status_code == 401 and "Wrong username or password" in wrong.text
            bad_code = await c.post("/device", data={"code": "XXX-XXX-XXX", "username": "dora",
                                                     "password": "Dora-pass-1"})  # fmt: skip
            assert bad_code.status_code == 400
            ok = await c.post("/device", data={"code": flow["user_code"].lower(),
                                               "username": "dora", "password": "Dora-pass-1"})
            assert ok.status_code == 200 and "Signed in as dora" in ok.text
            done = await post_token(c, **poll)
            assert jwt.decode(done.json()["access_token"],
                              options={"verify_signature": False})["oid"] == user.object_id
            # Expired: the flow's 15 minutes are over.
            for f in lab.device_sign_ins._flows.values():
                f.expires_at = time.time() - 1
            assert (await post_token(c, **poll)).json()["error"] == "expired_token"

    run(lab, body)


def test_key_rotation_keeps_the_old_key_for_the_overlap(lab: Lab, tmp_path: Path) -> None:
    sp, secret = lab.identity.create_sp_for_rbac("rot", [("Reader", "/")])
    form = {"grant_type": "client_credentials", "client_id": str(sp.app_id),
            "client_secret": str(secret), "scope": ARM_SCOPE}  # fmt: skip
    keys = KeySet(lab.settings.tls_dir / "token-keys")

    async def body() -> None:
        await with_vm1(lab)
        async with client_of(lab) as c:
            old = bearer(await post_token(c, **form))
            first = keys.rotate(overlap_s=3600)  # as `lab auth rotate-key` does
            published = [k["kid"] for k in (await c.get("/adfs/discovery/keys")).json()["keys"]]
            assert len(published) == 2 and published[-1] == first.kid
            new = bearer(await post_token(c, **form))
            assert jwt.get_unverified_header(new["Authorization"][7:])["kid"] == first.kid
            assert (await c.get(VM1, headers=old)).status_code == 200  # still in the overlap
            keys.rotate(overlap_s=0)  # the overlap is over: the first key goes
            published = (await c.get("/adfs/discovery/keys")).json()["keys"]
            assert first.kid not in [k["kid"] for k in published]
            refused = await c.get(VM1, headers=old)
            assert refused.status_code == 401 and "rotated away" in refused.text
            key_file = next((lab.settings.tls_dir / "token-keys").glob("*.pem"))
            assert key_file.stat().st_mode & 0o777 == 0o600

    run(lab, body)


FORM_FIELDS = ("grant_type", "client_id", "client_secret", "client_assertion_type",
               "client_assertion", "scope", "username", "password", "refresh_token",
               "device_code", "resource")  # fmt: skip


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(form=st.dictionaries(st.sampled_from(FORM_FIELDS),
                            st.one_of(st.text(max_size=40), st.sampled_from(
                                ["client_credentials", "password", "refresh_token",
                                 DEVICE_CODE_GRANT, ARM_SCOPE, ASSERTION_TYPE,
                                 "eyJhbGciOiJSUzI1NiJ9.e30.x", "a.b.c"]))),
       raw=st.binary(max_size=60))  # fmt: skip
def test_the_token_endpoint_never_answers_5xx(form: dict[str, str], raw: bytes,
                                              tmp_path_factory: pytest.TempPathFactory,
                                              image_cache: Path) -> None:  # fmt: skip
    lab = _fuzz_lab(tmp_path_factory, image_cache)

    async def body() -> None:
        async with client_of(lab) as c:
            for r in (await c.post("/adfs/oauth2/token", data=form),
                      await c.post("/adfs/oauth2/token", content=raw, headers={
                          "content-type": "application/x-www-form-urlencoded"})):  # fmt: skip
                assert r.status_code < 500, (form, raw, r.text)
                assert isinstance(r.json()["error"], str) or r.status_code == 200

    run(lab, body)


_FUZZ: dict[str, Lab] = {}


def _fuzz_lab(factory: pytest.TempPathFactory, image_cache: Path) -> Lab:
    """One lab for every fuzz example (making one costs more than the example)."""
    if "lab" not in _FUZZ:
        from lab.hypervisor.fake import FakeHypervisor
        from lab.settings import Settings
        from tests.unit.fakelab import SHUTDOWN_TIMEOUT

        root = factory.mktemp("fuzz-authority")
        _FUZZ["lab"] = Lab(Settings(data_dir=root / "data", image_cache=image_cache,
                                    images_dir=root / "recipes", libvirt_uri="test:///default",
                                    accel="qemu", shutdown_timeout=SHUTDOWN_TIMEOUT),
                           FakeHypervisor())  # fmt: skip
        _FUZZ["lab"].identity.create_sp_for_rbac("fuzz", [("Reader", "/")])
    return _FUZZ["lab"]


LAB_FILE = f"""\
subscriptionId: {SUBSCRIPTION}
resourceGroups:
  - name: rg1
principals:
  users:
    - username: trainer
      password: "Trainer-pass-1"
      roleAssignments: [{{role: reader, scope: "/subscriptions/{SUBSCRIPTION}"}}]
  servicePrincipals:
    - name: ci
      appId: 11111111-AAAA-4bbb-8ccc-000000000001
      secret: "ci-secret-value-1"
      roleAssignments: [{{role: Contributor}}]
"""


def test_a_lab_file_declares_users_and_service_principals(lab: Lab) -> None:
    app_id = "11111111-aaaa-4bbb-8ccc-000000000001"

    async def up(text: str) -> None:
        await lab.reconciler.up(lab.parse(text, "lab.yaml"))

    async def body() -> None:
        await up(LAB_FILE)
        await up(LAB_FILE)  # idempotent
        assert [(r.role, r.scope) for r in lab.identity.assignments()] == [
            ("Contributor", "/"), ("Reader", SUB)]
        async with client_of(lab) as c:
            sp = {"grant_type": "client_credentials", "client_id": app_id, "scope": ARM_SCOPE}
            assert (await post_token(c, **sp, client_secret="ci-secret-value-1")).status_code == 200
            user = await post_token(c, grant_type="password", username="trainer", client_id="c",
                                    password="Trainer-pass-1", scope=ARM_SCOPE)  # fmt: skip
            assert user.status_code == 200
            # The file's secret is the secret: changed there, changed on the next `lab up`.
            await up(LAB_FILE.replace("ci-secret-value-1", "ci-secret-value-2"))
            old = await post_token(c, **sp, client_secret="ci-secret-value-1")
            assert old.json()["error_codes"] == [7000215]
            assert (await post_token(c, **sp, client_secret="ci-secret-value-2")).status_code == 200

    run(lab, body)
    for bad, words in (("role: reader", "unknown role 'God'"), ("appId: 1111", "is not a GUID"),
                       ('password: "Trainer-pass-1"', "at least 8 characters")):  # fmt: skip
        text = LAB_FILE.replace(bad, {"role: reader": "role: God", "appId: 1111": "appId: x1111",
                                      'password: "Trainer-pass-1"': 'password: "short"'}[bad])
        with pytest.raises(LabFileError) as err:
            lab.parse(text, "lab.yaml")
        assert words in str(err.value) and "lab.yaml:" in str(err.value), str(err.value)


def test_remembered_secrets_are_exactly_the_verified_ones(lab: Lab) -> None:
    """The in-memory memo of verified secrets (scrypt costs ~50 ms a check) never lets another
    secret in, and forgets a secret that is no longer the principal's."""
    user = lab.identity.add_user("memo", "Memo-pass-1")
    assert lab.identity.secret_ok(user, "Memo-pass-1")
    started = time.perf_counter()
    assert lab.identity.secret_ok(user, "Memo-pass-1")
    assert time.perf_counter() - started < 0.005  # remembered: no scrypt
    assert not lab.identity.secret_ok(user, "Memo-pass-2")
    changed = lab.identity.set_password("memo", "Memo-pass-2")
    assert not lab.identity.secret_ok(changed, "Memo-pass-1")
    assert lab.identity.secret_ok(changed, "Memo-pass-2")
