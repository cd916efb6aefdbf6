"""`lab user`, `lab sp`, `lab role assignment` and `lab auth`: the lab's directory, managed as
Entra ID and Azure RBAC are with `az`. What `lab sp create-for-rbac` prints is what
`az ad sp create-for-rbac` prints, so scripts that read it work unchanged."""

from __future__ import annotations

import base64
import datetime
import os
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from rich.table import Table

from lab.cli import output
from lab.cli.common import client, handle_errors
from lab.domain.errors import InvalidInput
from lab.domain.rbac import ROLE_NAMES


@click.group()
def user() -> None:
    """Lab users: they sign in with a username and password (`az login -u`, the portal)."""


@user.command("add")
@click.argument("username")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              help="At least 8 characters (asked for when not given).")  # fmt: skip
@click.option("--role", "role", type=click.Choice(list(ROLE_NAMES)), default=None,
              help="Also assign this built-in role (at --scope).")  # fmt: skip
@click.option("--scope", default="/", show_default=True)
@handle_errors
def user_add(username: str, password: str, role: str | None, scope: str) -> None:
    c = client()
    made = c.json("POST", "/v1/users", json={"username": username, "password": password})
    if role:
        c.json("POST", "/v1/role-assignments",
               json={"assignee": username, "role": role, "scope": scope})  # fmt: skip
    output.out.print(f"user {made['name']} (object id {made['objectId']}) added")


@user.command("passwd")
@click.argument("username")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@handle_errors
def user_passwd(username: str, password: str) -> None:
    client().json("PUT", f"/v1/users/{username}/password", json={"password": password})
    output.out.print(f"password of {username} changed; its tokens stay valid until they expire")


@user.command("rm")
@click.argument("username")
@handle_errors
def user_rm(username: str) -> None:
    gone = client().json("DELETE", f"/v1/principals/{username}")
    output.out.print(f"{gone['type']} {gone['name']} and its role assignments removed")


@user.command("ls")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def user_ls(as_json: bool) -> None:
    """Users and service principals, with their role assignments."""
    c = client()
    rows = c.json("GET", "/v1/principals")
    grants = c.json("GET", "/v1/role-assignments")
    if as_json:
        for r in rows:
            r["roleAssignments"] = [g for g in grants if g["principalId"] == r["objectId"]]
        output.print_json(rows)
        return
    table = Table("type", "name", "app id", "roles", box=None)
    for r in rows:
        roles = ", ".join(f"{g['roleDefinitionName']} at {g['scope']}" for g in grants
                          if g["principalId"] == r["objectId"])  # fmt: skip
        table.add_row(r["type"], r["name"], r.get("appId", ""), roles)
    output.out.print(table)


@click.group()
def sp() -> None:
    """Service principals: apps that sign in with a secret or a certificate."""


@sp.command("create-for-rbac")
@click.option("--name", "-n", required=True, help="The display name.")
@click.option("--role", default=None, help="A built-in role to assign (e.g. Contributor).")
@click.option("--scopes", multiple=True, help="Where the role holds (default /); repeatable.")
@click.option("--create-cert", is_flag=True,
              help="Sign in with a new self-signed certificate instead of a secret; its PEM "
                   "(certificate and private key) goes to --cert-file.")  # fmt: skip
@click.option(
    "--cert-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="With --create-cert: where to write the PEM (default ./<name>.pem, 0600).",
)
@click.option(
    "--cert",
    "cert_path",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Sign in with this existing certificate (PEM) instead of a secret.",
)
@handle_errors
def create_for_rbac(name: str, role: str | None, scopes: tuple[str, ...], create_cert: bool,
                    cert_file: str | None, cert_path: str | None) -> None:  # fmt: skip
    """Make a service principal and print its credentials once, as `az ad sp create-for-rbac`."""
    if create_cert and cert_path:
        raise InvalidInput("give --create-cert or --cert, not both", target="cert")
    roles = [{"role": role, "scope": s} for s in (scopes or ("/",))] if role else []
    body: dict[str, object] = {"name": name, "roles": roles}
    pem_file = None
    if create_cert:
        pem_file = Path(cert_file or f"{name}.pem").resolve()
        cert_pem = _write_self_signed(pem_file, name)
    elif cert_path:
        cert_pem = Path(cert_path).read_text()
    if create_cert or cert_path:
        body["certificatePem"] = _certificate_only(cert_pem, cert_path or str(pem_file))
        body["certificateThumbprint"] = _x5t(body["certificatePem"])  # type: ignore[arg-type]
    made = client().json("POST", "/v1/service-principals", json=body)
    if pem_file is not None:
        made["fileWithCertAndPrivateKey"] = str(pem_file)
    output.print_json(made)


def _x5t(cert_pem: str) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA1())).rstrip(b"=").decode()


def _certificate_only(pem: str, where: str) -> str:
    start = pem.find("-----BEGIN CERTIFICATE-----")
    end = pem.find("-----END CERTIFICATE-----")
    if start < 0 or end < 0:
        raise InvalidInput(f"{where}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                           target="cert")  # fmt: skip
    return pem[start : end + len("-----END CERTIFICATE-----")] + "\n"


def _write_self_signed(path: Path, name: str) -> str:
    """A one-year self-signed certificate and its key in one PEM file (0600), as `az ad sp
    create-for-rbac --create-cert` writes; returns the file's text."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .sign(key, hashes.SHA256()))  # fmt: skip
    text = (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode()
            + cert.public_bytes(serialization.Encoding.PEM).decode())  # fmt: skip
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return text


@click.group()
def role() -> None:
    """Azure RBAC: role assignments of users and service principals."""


@role.group()
def assignment() -> None:
    """Role assignments (`az role assignment` in the lab)."""


@assignment.command("create")
@click.option("--assignee", required=True, help="Username, app id or object id.")
@click.option("--role", "role_name", required=True, type=click.Choice(list(ROLE_NAMES)))
@click.option("--scope", default="/", show_default=True)
@handle_errors
def assignment_create(assignee: str, role_name: str, scope: str) -> None:
    output.print_json(client().json("POST", "/v1/role-assignments",
                                    json={"assignee": assignee, "role": role_name,
                                          "scope": scope}))  # fmt: skip


@assignment.command("list")
@click.option("--assignee", default=None)
@handle_errors
def assignment_list(assignee: str | None) -> None:
    params = {"assignee": assignee} if assignee else {}
    output.print_json(client().json("GET", "/v1/role-assignments", params=params))


@assignment.command("delete")
@click.option("--ids", "name", default=None, help="The assignment's name (or whole id).")
@click.option("--assignee", default=None)
@click.option("--role", "role_name", default=None)
@click.option("--scope", default=None)
@handle_errors
def assignment_delete(name: str | None, assignee: str | None, role_name: str | None,
                      scope: str | None) -> None:  # fmt: skip
    """Takes effect on the assignee's next request, not when its token expires."""
    params = {k: v for k, v in (("name", name.rsplit("/", 1)[-1] if name else None),
                                ("assignee", assignee), ("role", role_name),
                                ("scope", scope)) if v}  # fmt: skip
    gone = client().json("DELETE", "/v1/role-assignments", params=params)
    output.out.print(f"{len(gone)} role assignment(s) deleted")


@click.group()
def auth() -> None:
    """The lab's sign-in authority."""


@auth.command("rotate-key")
@handle_errors
def rotate_key() -> None:
    """Sign new tokens with a new key; the old key verifies for one more token lifetime."""
    out = client().json("POST", "/v1/authority/rotate-key")
    output.out.print(f"signing key {out['kid']}; published: {', '.join(out['published'])}")
