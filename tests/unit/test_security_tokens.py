"""Bearer tokens refused with a 401 and Azure's error code: expired, wrong signature, wrong
audience, wrong issuer, `alg: none`, missing, malformed; and custom roles carried by a token."""

from __future__ import annotations

import base64
import json
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from lab.api.azure.app import create_azure_app
from lab.api.security.tokens import AUDIENCE, ISSUER, issue
from lab.domain.errors import InvalidInput
from lab.domain.rbac import custom_role, parse_role_definition
from lab.services.lab import Lab
from tests.unit.fakelab import SUBSCRIPTION, new_vm, run

KEY = b"k" * 32
VM1 = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg1/providers/Microsoft.Compute"
       "/virtualMachines/vm1?api-version=2024-07-01")  # fmt: skip


#: The cases' tokens are made at import, and the unit tests run after the slow integration
#: group in `make test` (30 minutes and more): they must outlive it, or every refusal is an expiry.
DAY = 86400


def claims(**override: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"aud": AUDIENCE, "iss": ISSUER, "iat": now, "nbf": now, "exp": now + DAY,
            "name": "mallory", "oid": "0000",
            "roles": [{"role": "Owner", "scope": "/"}]}  # fmt: skip
    return {**base, **override}


def b64(part: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def alg_none(body: dict[str, Any]) -> str:
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(body)}."


with warnings.catch_warnings():  # PyJWT warns that 32 bytes is short for HS512: it is the point
    warnings.simplefilter("ignore")
    HS512 = jwt.encode(claims(), KEY, algorithm="HS512")

CASES: list[tuple[str, dict[str, str], str, str]] = [
    ("missing", {}, "AuthenticationFailed", "'Authorization' header is missing"),
    ("not bearer", {"Authorization": "Basic YWxpY2U6cHc="}, "AuthenticationFailed", "missing"),
    ("empty bearer", {"Authorization": "Bearer "}, "InvalidAuthenticationToken", "invalid"),
    ("garbage", {"Authorization": "Bearer not.a.jwt"}, "InvalidAuthenticationToken", "invalid"),
    ("expired", {"Authorization": "Bearer " + jwt.encode(claims(exp=int(time.time()) - 60), KEY)},
     "ExpiredAuthenticationToken", "expiry"),
    ("wrong signature", {"Authorization": "Bearer " + jwt.encode(claims(), b"x" * 32)},
     "InvalidAuthenticationToken", "Signature verification failed"),
    ("wrong audience",
     {"Authorization": "Bearer " + jwt.encode(claims(aud="https://vault.azure.net"), KEY)},
     "InvalidAuthenticationToken", "audience"),
    ("wrong issuer",
     {"Authorization": "Bearer " + jwt.encode(claims(iss="https://sts.windows.net/x/"), KEY)},
     "InvalidAuthenticationToken", "issuer"),
    ("alg none", {"Authorization": "Bearer " + alg_none(claims())},
     "InvalidAuthenticationToken", "invalid"),
    ("HS512 with the right key", {"Authorization": "Bearer " + HS512},
     "InvalidAuthenticationToken", "alg value is not allowed"),
    ("no roles claim", {"Authorization": "Bearer " + jwt.encode(
        {k: v for k, v in claims().items() if k != "roles"}, KEY)},
     "InvalidAuthenticationToken", "claims"),
    ("unknown role", {"Authorization": "Bearer " + jwt.encode(
        claims(roles=[{"role": "God", "scope": "/"}]), KEY)},
     "InvalidAuthenticationToken", "unknown role"),
]  # fmt: skip


def test_bad_tokens_get_401_with_azures_code(lab: Lab) -> None:
    app = create_azure_app(lab, KEY, b"s" * 32)
    good = {"Authorization": "Bearer " + issue(KEY, user="alice", roles=[("Owner", "/")])}

    async def body() -> None:
        await lab.vms.create(new_vm())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://lab.test") as c:
            assert (await c.get(VM1, headers=good)).status_code == 200  # the control
            for name, headers, code, words in CASES:
                r = await c.get(VM1, headers=headers)
                assert r.status_code == 401, (name, r.status_code, r.text)
                error = r.json()["error"]
                assert error["code"] == code, (name, error)
                assert words.lower() in error["message"].lower(), (name, error["message"])

    run(lab, body)


def test_a_custom_role_travels_in_the_token_and_is_checked() -> None:
    connect = "Microsoft.SerialConsole/serialPorts/connect/action"
    role = custom_role("Console Only", [connect])
    token = issue(KEY, user="carol", roles=[(role, "/subscriptions/s1")])
    from lab.api.security.tokens import verify

    who = verify(KEY, f"Bearer {token}")
    vm = "/subscriptions/s1/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/v"
    assert who.may(connect, vm)
    assert not who.may("Microsoft.Compute/virtualMachines/read", vm)
    assert not who.may(connect, vm.replace("/s1/", "/s2/"))
    # The token's signature covers the actions: widening them breaks it.
    head, payload, sig = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["roles"][0]["actions"] = ["*"]
    forged = f"{head}.{b64(body)}.{sig}"
    with pytest.raises(Exception, match="Signature verification failed"):
        verify(KEY, f"Bearer {forged}")


def test_role_definition_files_and_bad_ones_say_what_is_wrong() -> None:
    role = parse_role_definition(json.dumps({
        "Name": "Serial Console Operator", "IsCustom": True, "Description": "console only",
        "Actions": ["Microsoft.SerialConsole/serialPorts/connect/action",
                    "Microsoft.Compute/virtualMachines/read"],
        "NotActions": [], "AssignableScopes": ["/subscriptions/s1"],
    }), "role.json")  # fmt: skip
    assert role.custom and role.allows("Microsoft.Compute/virtualMachines/read")
    assert not role.allows("Microsoft.Compute/virtualMachines/write")
    for text, words in [
        ("{", "role.json:1: not JSON"),
        ('{"Actions": ["*"]}', 'no "Name"'),
        ('{"Name": "Reader", "Actions": ["*"]}', "built-in role"),
        ('{"Name": "x", "Actions": []}', "no Actions"),
        ('{"Name": "x", "Actions": "Microsoft.Compute/*"}', "must be a list"),
        ('{"Name": "x", "Actions": ["read everything"]}', "not an action string"),
    ]:
        with pytest.raises(InvalidInput, match=words):
            parse_role_definition(text, "role.json")


def test_lab_token_makes_custom_roles(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from lab.api.security.tokens import signing_key, verify
    from lab.cli.main import cli
    from lab.settings import get_settings

    env = {"LAB_DATA_DIR": str(tmp_path / "data")}
    connect = "Microsoft.SerialConsole/serialPorts/connect/action"
    vm = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg1/providers/Microsoft.Compute"
          "/virtualMachines/vm1")  # fmt: skip
    role_file = tmp_path / "role.json"
    role_file.write_text(json.dumps({"Name": "VM Reader", "Actions": ["Microsoft.Compute/*/read"],
                                     "NotActions": ["Microsoft.Compute/*/instanceView/read"]}))
    get_settings.cache_clear()  # `lab` reads LAB_DATA_DIR once per process
    runner = CliRunner()
    out = runner.invoke(cli, ["token", "--user", "carol", "--role", "Reader", "--action", connect,
                              "--role-file", str(role_file), "--scope", "/subscriptions/other",
                              "--scope", vm, "--scope", "/"], env=env)  # fmt: skip
    assert out.exit_code == 0, out.output
    key = signing_key(tmp_path / "data" / "tls" / "token-signing.key")
    who = verify(key, "Bearer " + out.output.strip())
    assert [(a.role.name, a.scope) for a in who.assignments] == [
        ("Reader", "/subscriptions/other"), ("Custom", vm), ("VM Reader", "/")]
    assert who.may(connect, vm) and not who.may(connect, vm.replace("vm1", "vm2"))
    assert who.may("Microsoft.Compute/virtualMachines/read", vm)
    assert not who.may("Microsoft.Compute/virtualMachines/instanceView/read", vm)
    for args, words in [
        (["--not-action", connect], "--not-action needs --action"),
        (["--action", "not an action"], "not an action string"),
        (["--role-file", str(tmp_path / "missing.json")], "cannot read"),
        (["--action", connect, "--scope", "/", "--scope", "/"], "2 --scope for 1 roles"),
    ]:
        bad = runner.invoke(cli, ["token", *args], env=env)
        assert bad.exit_code == 2 and words in bad.output, (args, bad.output)
    get_settings.cache_clear()  # no later test sees this data dir
