"""Unit tests for Azure's naming rules (`lab.domain.names`)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab.domain import names
from lab.domain.errors import InvalidInput


def _refused(call: object, *args: object, **kwargs: object) -> InvalidInput:
    assert callable(call)
    with pytest.raises(InvalidInput) as info:
        call(*args, **kwargs)
    assert info.value.code == "InvalidParameter"
    assert info.value.status == 400
    return info.value


# --- VM names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vm1", "a", "VM_1", "web.01", "x" * 64, "_lead", "a-b_c.d"])
def test_vm_name_accepts(name: str) -> None:
    names.validate_vm_name(name)


@pytest.mark.parametrize(
    "name", ["", "x" * 65, "vm1.", "vm1-", "vm 1", "vm/1", "vm@1", "vm1\n", "wörld"]
)
def test_vm_name_refuses_and_says_what_is_allowed(name: str) -> None:
    error = _refused(names.validate_vm_name, name)
    assert "1-64" in error.message
    assert "must not end with a period or a hyphen" in error.message
    assert error.target == "name"


def test_vm_name_target_is_configurable() -> None:
    assert _refused(names.validate_vm_name, "bad!", target="vmName").target == "vmName"


_VM_NAME_REFERENCE = re.compile(r"[A-Za-z0-9._-]{0,63}[A-Za-z0-9_]")


@settings(database=None)
@given(st.text(alphabet="aZ09._- !é", max_size=70))
def test_vm_name_matches_reference_rule(name: str) -> None:
    expected = _VM_NAME_REFERENCE.fullmatch(name) is not None
    try:
        names.validate_vm_name(name)
        accepted = True
    except InvalidInput:
        accepted = False
    assert accepted == expected


# --- storage accounts ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["abc", "demodiag", "a1b2c3", "x" * 24, "123"])
def test_storage_account_name_accepts(name: str) -> None:
    names.validate_storage_account_name(name)


@pytest.mark.parametrize("name", ["ab", "x" * 25, "Demodiag", "demo-diag", "demo_diag", "démo1"])
def test_storage_account_name_refuses(name: str) -> None:
    error = _refused(names.validate_storage_account_name, name)
    assert "between 3 and 24 characters" in error.message
    assert "numbers and lower-case letters only" in error.message


# --- resource groups ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["demo-rg", "rg", "a", "My_RG.(prod)", "x" * 90, "Gruppe-München", "rg.1"]
)
def test_resource_group_name_accepts(name: str) -> None:
    names.validate_resource_group_name(name)


@pytest.mark.parametrize("name", ["", "x" * 91, "rg.", "rg 1", "rg/1", "rg#", "rg\t"])
def test_resource_group_name_refuses(name: str) -> None:
    error = _refused(names.validate_resource_group_name, name)
    assert "1-90 characters" in error.message
    assert "cannot end in a period" in error.message


# --- admin user names ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["azureuser", "_svc", "ops-1", "a_b", "x" * 32])
def test_linux_admin_username_accepts(name: str) -> None:
    names.validate_admin_username(name)


@pytest.mark.parametrize("name", ["Azureuser", "1ops", "-ops", "ops.1", "", "x" * 33, "op s"])
def test_linux_admin_username_refuses_bad_syntax(name: str) -> None:
    error = _refused(names.validate_admin_username, name)
    assert "lower-case" in error.message
    assert "1-32 characters" in error.message
    assert error.target == "adminUsername"


@pytest.mark.parametrize("name", [*sorted(names.DISALLOWED_ADMIN_USERNAMES), "ROOT", "Admin"])
def test_admin_username_refuses_reserved_names(name: str) -> None:
    for os_type in ("Linux", "Windows"):
        error = _refused(names.validate_admin_username, name, os_type=os_type)
        assert "not allowed" in error.message
        assert "Reserved names are:" in error.message


def test_windows_admin_username_rules() -> None:
    names.validate_admin_username("AzureUser", os_type="Windows")
    error = _refused(names.validate_admin_username, "x" * 21, os_type="Windows")
    assert "1-20 characters" in error.message
    _refused(names.validate_admin_username, "bad@name", os_type="Windows")
    _refused(names.validate_admin_username, "name.", os_type="Windows")


# --- admin passwords ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password", ["Passw0rd!", "abcDE1", "abc123!!", "ABC 123", "x" * 70 + "A1"]
)
def test_linux_password_accepts(password: str) -> None:
    names.validate_admin_password(password)


@pytest.mark.parametrize(
    "password",
    ["Ab1!", "onlylowercase", "PASSWORD1", "abcdefgh!", "Passw0rd\n", "A1!" * 25, "Ab1\x00xyz"],
)
def test_linux_password_refuses_weak_and_never_echoes_it(password: str) -> None:
    error = _refused(names.validate_admin_password, password)
    assert "between 6-72 characters" in error.message
    assert "at least 3 of password complexity requirements" in error.message
    assert password not in error.message
    assert error.target == "adminPassword"


@pytest.mark.parametrize("password", sorted(names.DISALLOWED_PASSWORDS))
def test_password_refuses_azures_disallowed_list(password: str) -> None:
    error = _refused(names.validate_admin_password, password)
    assert "not allowed" in error.message
    assert password not in error.message


def test_windows_password_lengths() -> None:
    _refused(names.validate_admin_password, "Abc12!x", os_type="Windows")  # 7 < 8
    names.validate_admin_password("Abc12!xy", os_type="Windows")
    names.validate_admin_password("Ab1!" * 30, os_type="Windows")  # 120 <= 123
    error = _refused(names.validate_admin_password, "Ab1!" * 31, os_type="Windows")
    assert "between 8-123 characters" in error.message


# --- tags ---------------------------------------------------------------------------------------


def test_tags() -> None:
    names.validate_tags({"env": "demo", "owner": ""})
    assert _refused(names.validate_tags, {"a/b": "x"}).target == "tags.a/b"
    assert "must not contain" in _refused(names.validate_tag, "a%b", "x").message
    assert "at most 256" in _refused(names.validate_tag, "k", "v" * 257).message
    assert (
        "at most 50 tags" in _refused(names.validate_tags, {str(i): "" for i in range(51)}).message
    )


# --- storage URIs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "account"),
    [
        ("https://demodiag.blob.core.windows.net/", "demodiag"),
        ("https://demodiag.blob.core.windows.net", "demodiag"),
        ("HTTPS://DemoDiag.blob.core.windows.net/", "demodiag"),
        ("https://abc.blob.localhost:10000/", "abc"),
    ],
)
def test_storage_account_from_uri(uri: str, account: str) -> None:
    assert names.storage_account_from_uri(uri) == account


def test_storage_uri_http_must_be_https() -> None:
    error = _refused(names.storage_account_from_uri, "http://demodiag.blob.core.windows.net/")
    assert "must be https" in error.message
    assert error.target == "bootDiagnostics.storageUri"


@pytest.mark.parametrize(
    "uri",
    [
        "demodiag",
        "ftp://demodiag.blob.core.windows.net/",
        "https://demodiag/",
        "https://demodiag.blob.core.windows.net/container",
        "https://demodiag.blob.core.windows.net/?sv=1",
        "https://user:pw@demodiag.blob.core.windows.net/",
        "https://demo-diag.blob.core.windows.net/",
        "https://demodiag.blob.core.windows.net:99999/",
        "https://[::1/",
        "https://demodiag.blob.core.windows.net/ ",
        "",
    ],
)
def test_storage_uri_refuses_other_shapes(uri: str) -> None:
    error = _refused(names.storage_account_from_uri, uri)
    assert "https://<account>.blob.core.windows.net/" in error.message


@settings(database=None)
@given(st.text(max_size=80))
def test_storage_account_from_uri_only_raises_invalid_input(uri: str) -> None:
    try:
        account = names.storage_account_from_uri(uri)
    except InvalidInput:
        return
    names.validate_storage_account_name(account)


def test_same_name_is_case_insensitive() -> None:
    assert names.same_name("VM1", "vm1")
    assert not names.same_name("vm1", "vm2")
