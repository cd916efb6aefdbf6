"""Azure's naming rules, as pure validators shared by the lab-file loader and the API.

Each ``validate_*`` function returns None for an acceptable value and raises `InvalidInput`
(code ``InvalidParameter``) otherwise, with a message that says what is allowed. Messages
never repeat a password. Azure compares resource names without regard to case; use
`same_name` when checking for duplicates.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Final, Literal
from urllib.parse import unquote, urlsplit

from lab.domain.errors import InvalidInput, InvalidResourceName

OsType = Literal["Linux", "Windows"]

VM_NAME_MAX: Final = 64
RESOURCE_GROUP_NAME_MAX: Final = 90
STORAGE_ACCOUNT_NAME_MIN: Final = 3
STORAGE_ACCOUNT_NAME_MAX: Final = 24
LINUX_PASSWORD_MIN: Final = 6
LINUX_PASSWORD_MAX: Final = 72
WINDOWS_PASSWORD_MIN: Final = 8
WINDOWS_PASSWORD_MAX: Final = 123
WINDOWS_USERNAME_MAX: Final = 20
TAG_NAME_MAX: Final = 512
TAG_VALUE_MAX: Final = 256
TAGS_MAX: Final = 50

#: Admin user names Azure refuses (compared without regard to case).
DISALLOWED_ADMIN_USERNAMES: Final = frozenset(
    {
        "administrator", "admin", "user", "user1", "test", "user2", "test1", "user3", "admin1",
        "1", "123", "a", "actuser", "adm", "admin2", "aspnet", "backup", "console", "david",
        "guest", "john", "owner", "root", "server", "sql", "support", "support_388945a0", "sys",
        "test2", "test3", "user4", "user5",
    }
)  # fmt: skip

#: Passwords Azure refuses outright, although they meet the complexity rules.
DISALLOWED_PASSWORDS: Final = frozenset(
    {
        "abc@123", "P@$$w0rd", "P@ssw0rd", "P@ssword123", "Pa$$word", "pass@word1",
        "Password!", "Password1", "Password22", "iloveyou!",
    }
)  # fmt: skip

_VM_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_STORAGE_ACCOUNT_NAME = re.compile(r"[a-z0-9]{3,24}")
_LINUX_USERNAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_WINDOWS_USERNAME_FORBIDDEN = set('\\/"[]:|<>+=;,?*@&')
_TAG_NAME_FORBIDDEN = set("<>%&\\?/")
_RG_EXTRA = set("_-.()")
_LETTER_OR_DIGIT = {"Lu", "Ll", "Lt", "Lm", "Lo", "Nd"}


def _invalid(message: str, target: str) -> InvalidInput:
    return InvalidInput(message, target=target)


def same_name(a: str, b: str) -> bool:
    """Whether two Azure resource names denote the same resource (case-insensitive)."""
    return a.casefold() == b.casefold()


def validate_vm_name(name: str, *, target: str = "name") -> None:
    """A VM name: 1-64 letters, digits, '-', '_', '.'; not ending in '.' or '-'."""
    if _VM_NAME.fullmatch(name) and not name.endswith((".", "-")):
        return
    raise _invalid(
        f"The VM name '{name}' is invalid. A VM name must be 1-{VM_NAME_MAX} characters of "
        "letters, digits, hyphens (-), underscores (_) and periods (.), and must not end with "
        "a period or a hyphen.",
        target,
    )


def validate_storage_account_name(name: str, *, target: str = "name") -> None:
    """A storage account name: 3-24 lowercase letters and digits."""
    if _STORAGE_ACCOUNT_NAME.fullmatch(name):
        return
    raise _invalid(
        f"'{name}' is not a valid storage account name. Storage account name must be between "
        f"{STORAGE_ACCOUNT_NAME_MIN} and {STORAGE_ACCOUNT_NAME_MAX} characters in length and "
        "use numbers and lower-case letters only.",
        target,
    )


BLOB_NAME_MAX: Final = 1024
#: Percent-decoding rounds a blob name is checked through (`%252e` is `%2e` is `.`).
_BLOB_DECODE_ROUNDS: Final = 4


def _blob_name_problem(name: str) -> str | None:
    if not name:
        return "it is empty"
    if len(name) > BLOB_NAME_MAX:
        return f"it is longer than {BLOB_NAME_MAX} characters"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "it holds a control character (such as NUL)"
    if "\\" in name:
        return "it holds a backslash"
    if name.startswith("/"):
        return "it is an absolute path (starts with '/')"
    segments = name.split("/")
    if any(s in (".", "..") for s in segments):
        return "it has a '.' or '..' path segment"
    if "" in segments:
        return "it has an empty path segment ('//' or a trailing '/')"
    return None


def validate_blob_name(name: str, *, target: str = "blob") -> None:
    """A blob name: 1-1,024 characters, '/' between virtual directories. Refused besides, as
    spellings of a path that leaves the container, in the name as given and in every
    percent-decoded form of it (any case, encoded more than once): '.' and '..' segments, a
    leading '/', empty segments, backslashes and control characters (NUL)."""
    seen = name
    for _ in range(_BLOB_DECODE_ROUNDS):
        problem = _blob_name_problem(seen)
        if problem is not None:
            shown = repr(name) if seen == name else f"{name!r} (decoded: {seen!r})"
            raise InvalidResourceName(f"The blob name {shown} is not allowed: {problem}.",
                                      target=target)  # fmt: skip
        decoded = unquote(seen) if "%" in seen else seen
        if decoded == seen:
            return
        seen = decoded
    raise InvalidResourceName(f"The blob name {name!r} is not allowed: it is percent-encoded "
                              f"more than {_BLOB_DECODE_ROUNDS - 1} times.",
                              target=target)  # fmt: skip


def validate_resource_group_name(name: str, *, target: str = "name") -> None:
    """A resource group name: 1-90 letters, digits, '_', '-', '.', '(', ')'; no trailing '.'."""
    ok = (
        1 <= len(name) <= RESOURCE_GROUP_NAME_MAX
        and not name.endswith(".")
        and all(ch in _RG_EXTRA or unicodedata.category(ch) in _LETTER_OR_DIGIT for ch in name)
    )
    if ok:
        return
    raise _invalid(
        f"The resource group name '{name}' is invalid. Resource group names must be "
        f"1-{RESOURCE_GROUP_NAME_MAX} characters and only allow alphanumeric characters, "
        "periods, underscores, hyphens and parentheses, and cannot end in a period.",
        target,
    )


def validate_admin_username(
    name: str, *, os_type: OsType = "Linux", target: str = "adminUsername"
) -> None:
    """An admin user name: Linux user-name rules (or Windows'), and not one Azure reserves."""
    if name.casefold() in DISALLOWED_ADMIN_USERNAMES:
        raise _invalid(
            f"The Admin Username '{name}' is not allowed: Azure reserves it. Reserved names "
            f"are: {', '.join(sorted(DISALLOWED_ADMIN_USERNAMES))}.",
            target,
        )
    if os_type == "Windows":
        ok = (
            1 <= len(name) <= WINDOWS_USERNAME_MAX
            and not name.endswith(".")
            and not any(ch in _WINDOWS_USERNAME_FORBIDDEN or not ch.isprintable() for ch in name)
        )
        if not ok:
            raise _invalid(
                f"The Admin Username '{name}' is invalid. A Windows admin user name must be "
                f"1-{WINDOWS_USERNAME_MAX} characters, must not end with a period, and must not "
                'contain any of \\ / " [ ] : | < > + = ; , ? * @ & or control characters.',
                target,
            )
        return
    if not _LINUX_USERNAME.fullmatch(name):
        raise _invalid(
            f"The Admin Username '{name}' is invalid. A Linux admin user name must be 1-32 "
            "characters: it starts with a lower-case letter or an underscore, followed by "
            "lower-case letters, digits, underscores or hyphens.",
            target,
        )


def _password_classes(password: str) -> int:
    return sum(
        (
            any(ch.islower() for ch in password),
            any(ch.isupper() for ch in password),
            any(ch.isdigit() for ch in password),
            any(not ch.isalnum() for ch in password),
        )
    )


def validate_admin_password(
    password: str, *, os_type: OsType = "Linux", target: str = "adminPassword"
) -> None:
    """An admin password: Azure's length and complexity rules, and not one it refuses."""
    if password in DISALLOWED_PASSWORDS:
        raise _invalid(
            "The supplied password is not allowed: Azure refuses a list of common passwords "
            "even though they meet the complexity rules. Choose a less predictable password.",
            target,
        )
    low, high = (
        (WINDOWS_PASSWORD_MIN, WINDOWS_PASSWORD_MAX)
        if os_type == "Windows"
        else (LINUX_PASSWORD_MIN, LINUX_PASSWORD_MAX)
    )
    ok = (
        low <= len(password) <= high
        and not any(unicodedata.category(ch) == "Cc" for ch in password)
        and _password_classes(password) >= 3
    )
    if not ok:
        raise _invalid(
            f"The supplied password must be between {low}-{high} characters long and must "
            "satisfy at least 3 of password complexity requirements from the following: "
            "1) Contains an uppercase character 2) Contains a lowercase character "
            "3) Contains a numeric digit 4) Contains a special character "
            "5) Control characters are not allowed",
            target,
        )


def validate_tag(name: str, value: str, *, target: str = "tags") -> None:
    """One resource tag: name 1-512 characters without < > % & \\ ? /; value <= 256 characters."""
    if not 1 <= len(name) <= TAG_NAME_MAX or any(ch in _TAG_NAME_FORBIDDEN for ch in name):
        raise _invalid(
            f"The tag name '{name}' is invalid. Tag names must be 1-{TAG_NAME_MAX} characters "
            "and must not contain < > % & \\ ? /.",
            target,
        )
    if len(value) > TAG_VALUE_MAX:
        raise _invalid(
            f"The value of tag '{name}' is too long: tag values are at most {TAG_VALUE_MAX} "
            "characters.",
            target,
        )


def validate_tags(tags: Mapping[str, str], *, target: str = "tags") -> None:
    """Resource tags: at most 50, each valid per `validate_tag`."""
    if len(tags) > TAGS_MAX:
        raise _invalid(f"A resource can have at most {TAGS_MAX} tags, got {len(tags)}.", target)
    for name, value in tags.items():
        validate_tag(name, value, target=f"{target}.{name}")


def storage_account_from_uri(uri: str, *, target: str = "bootDiagnostics.storageUri") -> str:
    """The storage account a boot-diagnostics storage URI points at.

    The URI must be ``https://<account>.<host>/``, normally
    ``https://<account>.blob.core.windows.net/``, with a valid account name as the first label
    of the host. ``http://`` is refused.
    """
    shape = "https://<account>.blob.core.windows.net/"
    if any(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in uri):
        raise _invalid(
            f"The boot diagnostics storage URI {uri!r} is invalid: it must not contain spaces or "
            f"control characters. It must look like {shape}.",
            target,
        )
    try:
        parts = urlsplit(uri)
        host = parts.hostname or ""
        _ = parts.port
    except ValueError:
        parts, host = None, ""
    if parts is not None and parts.scheme.lower() == "http":
        raise _invalid(
            f"The boot diagnostics storage URI '{uri}' must be https: Azure only accepts a "
            f"storage account blob endpoint over https, like {shape}.",
            target,
        )
    account, dot, rest = host.partition(".")
    ok = (
        parts is not None
        and parts.scheme.lower() == "https"
        and parts.username is None
        and parts.password is None
        and not parts.query
        and not parts.fragment
        and parts.path in ("", "/")
        and bool(dot)
        and bool(rest)
    )
    if not ok:
        raise _invalid(
            f"The boot diagnostics storage URI '{uri}' is invalid. It must look like {shape}, "
            "where <account> is a storage account defined in the lab.",
            target,
        )
    if not _STORAGE_ACCOUNT_NAME.fullmatch(account):
        raise _invalid(
            f"The boot diagnostics storage URI '{uri}' is invalid: '{account}' is not a valid "
            f"storage account name ({STORAGE_ACCOUNT_NAME_MIN}-{STORAGE_ACCOUNT_NAME_MAX} "
            f"lower-case letters and digits). It must look like {shape}.",
            target,
        )
    return account
