"""Unit tests for the lab definition models, the YAML loader and its located errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.domain.errors import InvalidInput, LabFileError
from lab.domain.labfile import (
    DEFAULT_LOCATION,
    DEFAULT_SUBSCRIPTION_ID,
    BootDiagnosticsDef,
    LabDefinition,
    VirtualMachineDef,
    VmSize,
    parse_lab_definition,
)
from lab.domain.sizes import AZURE_SIZES, lookup_size, resolve_size

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"
SOURCE = "lab.yaml"

# A valid lab; tests edit one line of it and check where the error is reported.
BASE = textwrap.dedent(
    """\
    subscriptionId: 8f6a2c1e-5b3d-4c7a-9e21-0d4b6f3a9c10
    location: westeurope
    resourceGroups:
      - name: demo-rg
        tags: {env: demo}
        storageAccounts:
          - name: demodiag
            allowSharedKeyAccess: true
            networkRuleSet: {defaultAction: Allow}
        virtualMachines:
          - name: vm1
            image: tiny
            size: Standard_B1s
            osType: Linux
            adminUsername: azureuser
            adminPassword: "Passw0rd!"
            bootDiagnostics: {enabled: true, storageUri: "https://demodiag.blob.core.windows.net/"}
            kernelArgs: ""
            tags: {role: web}
          - name: vm2
            image: tiny
            size: {vcpus: 1, memoryMiB: 512}
            adminUsername: azureuser
            adminPassword: "Passw0rd!"
      - name: other-rg
        storageAccounts:
          - name: otherdiag
    """
)
VM1 = "resourceGroups[0].virtualMachines[0]"
VM2 = "resourceGroups[0].virtualMachines[1]"


def parse(text: str, known_images: list[str] | None = None) -> LabDefinition:
    return parse_lab_definition(text, source=SOURCE, known_images=known_images)


def fails(text: str, known_images: list[str] | None = None) -> LabFileError:
    with pytest.raises(LabFileError) as info:
        parse(text, known_images)
    return info.value


def edit(old: str, new: str, *, count: int = 1) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, count)


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing `needle`."""
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


# --- valid files --------------------------------------------------------------------------------


def test_demo_file_parses() -> None:
    lab = parse_lab_definition(
        DEMO.read_text(encoding="utf-8"), source=str(DEMO), known_images=["tiny"]
    )
    assert lab.location == "westeurope"
    [group] = lab.resource_groups
    assert group.name == "demo-rg"
    assert [a.name for a in group.storage_accounts] == ["demodiag"]
    pairs = lab.virtual_machines()
    assert [(g.name, vm.name) for g, vm in pairs] == [("demo-rg", "vm1"), ("demo-rg", "vm2")]
    for _, vm in pairs:
        assert vm.image == "tiny"
        assert (vm.vcpus, vm.memory_mib) == (1, 256)
        assert vm.size_name is None
        assert vm.admin_username == "azureuser"
        assert vm.boot_diagnostics.enabled
        assert vm.boot_diagnostics_account == "demodiag"
        assert vm.tags
    assert lab.storage_account("demodiag") is not None


def test_base_file_parses_with_everything_resolved() -> None:
    lab = parse(BASE, known_images=["tiny"])
    assert lab.subscription_id == "8f6a2c1e-5b3d-4c7a-9e21-0d4b6f3a9c10"
    group = lab.resource_groups[0]
    assert group.tags == {"env": "demo"}
    account = group.storage_accounts[0]
    assert account.allow_shared_key_access is True
    assert account.network_rule_set.default_action == "Allow"
    vm1, vm2 = group.virtual_machines
    assert vm1.size == "Standard_B1s"
    assert vm1.size_name == "Standard_B1s"
    assert (vm1.vcpus, vm1.memory_mib) == (1, 1024)
    assert vm1.os_type == "Linux"
    assert vm1.admin_password == "Passw0rd!"
    assert vm1.boot_diagnostics == BootDiagnosticsDef(
        enabled=True, storage_uri="https://demodiag.blob.core.windows.net/"
    )
    assert vm1.boot_diagnostics_account == "demodiag"
    assert vm2.size == VmSize(vcpus=1, memory_mib=512)
    assert (vm2.vcpus, vm2.memory_mib) == (1, 512)
    assert vm2.boot_diagnostics == BootDiagnosticsDef()
    assert vm2.boot_diagnostics_account is None
    assert vm2.kernel_args == ""
    assert lab.storage_account("otherdiag") is not None
    assert lab.storage_account("nosuch") is None
    assert lab.resource_group("DEMO-RG") is group
    assert group.virtual_machine("VM2") is vm2
    assert group.virtual_machine("vm3") is None


def test_password_is_not_in_repr() -> None:
    lab = parse(BASE)
    assert "Passw0rd!" not in repr(lab)


def test_defaults() -> None:
    lab = parse(
        textwrap.dedent(
            """\
            resourceGroups:
              - name: rg
                storageAccounts: [{name: diag}]
                virtualMachines:
                  - {name: vm, image: tiny, adminUsername: ops, adminPassword: "Abc123!x"}
            """
        )
    )
    assert lab.subscription_id == DEFAULT_SUBSCRIPTION_ID
    assert lab.location == DEFAULT_LOCATION == "westeurope"
    account = lab.resource_groups[0].storage_accounts[0]
    assert account.allow_shared_key_access is True
    assert account.network_rule_set.default_action == "Allow"
    assert account.tags == {}
    vm = lab.resource_groups[0].virtual_machines[0]
    assert vm.size == "Standard_B1s"
    assert vm.os_type == "Linux"
    assert vm.boot_diagnostics.enabled is False
    assert vm.boot_diagnostics.storage_uri is None
    assert vm.kernel_args == ""
    assert vm.boot_messages == "normal", "the whole boot, as Azure's boot diagnostics shows"
    assert vm.hyper_v_generation == "V1"
    assert vm.tags == {}


def test_empty_resource_group_list_is_a_valid_lab() -> None:
    assert parse("resourceGroups: []\n").resource_groups == []


def test_enum_values_and_size_names_are_case_insensitive() -> None:
    lab = parse(
        edit("size: Standard_B1s", "size: standard_b1MS")
        .replace("osType: Linux", "osType: linux")
        .replace("defaultAction: Allow", "defaultAction: deny")
        .replace('kernelArgs: ""', 'kernelArgs: ""\n        hyperVGeneration: v2')
    )
    vm = lab.resource_groups[0].virtual_machines[0]
    assert vm.hyper_v_generation == "V2"
    assert vm.size == "Standard_B1ms"
    assert vm.memory_mib == 2048
    assert vm.os_type == "Linux"
    assert lab.resource_groups[0].storage_accounts[0].network_rule_set.default_action == "Deny"


def test_subscription_id_is_normalised_to_lower_case() -> None:
    lab = parse(
        edit("8f6a2c1e-5b3d-4c7a-9e21-0d4b6f3a9c10", "8F6A2C1E-5B3D-4C7A-9E21-0D4B6F3A9C10")
    )
    assert lab.subscription_id == "8f6a2c1e-5b3d-4c7a-9e21-0d4b6f3a9c10"


def test_windows_vm_uses_windows_rules() -> None:
    text = edit("osType: Linux", "osType: Windows").replace(
        "adminUsername: azureuser", "adminUsername: AzureUser", 1
    )
    vm = parse(text).resource_groups[0].virtual_machines[0]
    assert vm.os_type == "Windows"
    assert vm.admin_username == "AzureUser"
    short = edit("osType: Linux", "osType: Windows").replace('"Passw0rd!"', '"Pa1!xy"', 1)
    error = fails(short)
    assert error.field == f"{VM1}.adminPassword"
    assert "between 8-123 characters" in error.message


def test_anchors_and_merge_keys() -> None:
    text = textwrap.dedent(
        """\
        resourceGroups:
          - name: rg
            virtualMachines:
              - &vm
                name: vm1
                image: tiny
                size: {vcpus: 2, memoryMiB: 1024}
                adminUsername: ops
                adminPassword: "Abc123!x"
              - <<: *vm
                name: vm2
        """
    )
    vm1, vm2 = parse(text).resource_groups[0].virtual_machines
    assert vm2.name == "vm2"
    assert (vm2.vcpus, vm2.memory_mib, vm2.image) == (2, 1024, "tiny")
    assert vm1.name == "vm1"
    # A bad merged value is reported where it is written.
    bad = text.replace("vcpus: 2", "vcpus: 9").replace("name: vm2", "name: vm2\n    size: 1")
    error = fails(bad.replace("name: vm2\n    size: 1", "name: vm2"))
    assert (error.line, error.field) == (7, "resourceGroups[0].virtualMachines[0].size.vcpus")
    assert "second problem" not in error.message
    assert "resourceGroups[0].virtualMachines[1].size.vcpus" in error.message


def test_models_round_trip_through_their_aliases() -> None:
    lab = parse(BASE)
    again = LabDefinition.model_validate(lab.model_dump(by_alias=True))
    assert again == lab


def test_models_can_be_built_in_python_by_attribute_name() -> None:
    vm = VirtualMachineDef(
        name="vm",
        image="tiny",
        admin_username="ops",
        admin_password="Abc123!x",
        size="Standard_B2s",
    )
    assert (vm.vcpus, vm.memory_mib) == (2, 4096)


# --- sizes --------------------------------------------------------------------------------------


def test_size_table() -> None:
    assert lookup_size("standard_b1ls") == AZURE_SIZES["Standard_B1ls"]
    assert (AZURE_SIZES["Standard_B1s"].vcpus, AZURE_SIZES["Standard_B1s"].memory_mib) == (1, 1024)
    assert resolve_size("Standard_D2s_v3") == VmSize(vcpus=2, memory_mib=8192)
    assert resolve_size("Standard_A1_v2") == VmSize(vcpus=1, memory_mib=2048)
    custom = VmSize(vcpus=3, memory_mib=300)
    assert resolve_size(custom) is custom
    with pytest.raises(InvalidInput) as info:
        resolve_size("Standard_Nope")
    assert info.value.code == "InvalidParameter"
    assert "Standard_B1s" in info.value.message
    for row in AZURE_SIZES.values():
        assert 1 <= row.vcpus <= 8
        assert 128 <= row.memory_mib <= 16384


# --- located errors -----------------------------------------------------------------------------


def test_error_is_an_invalid_input_with_its_own_code() -> None:
    error = fails(edit("name: vm2", "name: vm2-"))
    assert isinstance(error, InvalidInput)
    assert error.code == "InvalidLabDefinition"
    assert error.status == 400
    assert error.target == error.field
    assert error.source == SOURCE
    assert str(error).startswith(f"{SOURCE}:{error.line}: {error.field}: ")


@pytest.mark.parametrize(
    ("text", "needle", "field", "says"),
    [
        pytest.param(
            edit("name: vm2", "name: vm2-"),
            "name: vm2-",
            f"{VM2}.name",
            ["1-64 characters", "must not end with a period or a hyphen"],
            id="bad-vm-name",
        ),
        pytest.param(
            edit("name: vm2", "name: VM1"),
            "name: VM1",
            f"{VM2}.name",
            ["already used by virtualMachines[0]", "unique within a resource group"],
            id="duplicate-vm-name-any-case",
        ),
        pytest.param(
            edit("name: other-rg", "name: Demo-RG"),
            "name: Demo-RG",
            "resourceGroups[1].name",
            ["already used by resourceGroups[0]", "unique in the lab"],
            id="duplicate-resource-group",
        ),
        pytest.param(
            edit("name: otherdiag", "name: demodiag  # again"),
            "# again",
            "resourceGroups[1].storageAccounts[0].name",
            ["already used by resourceGroups[0].storageAccounts[0]", "unique in the whole lab"],
            id="duplicate-storage-account-across-groups",
        ),
        pytest.param(
            edit("name: demo-rg", "name: demo rg."),
            "name: demo rg.",
            "resourceGroups[0].name",
            ["1-90 characters", "cannot end in a period"],
            id="bad-resource-group-name",
        ),
        pytest.param(
            edit("name: demodiag", "name: Demo-Diag"),
            "name: Demo-Diag",
            "resourceGroups[0].storageAccounts[0].name",
            ["between 3 and 24 characters", "numbers and lower-case letters only"],
            id="bad-storage-account-name",
        ),
        pytest.param(
            edit("https://demodiag.", "http://demodiag."),
            "http://demodiag",
            f"{VM1}.bootDiagnostics.storageUri",
            ["must be https", "https://<account>.blob.core.windows.net/"],
            id="http-storage-uri",
        ),
        pytest.param(
            edit("https://demodiag.", "https://nosuchdiag."),
            "nosuchdiag",
            f"{VM1}.bootDiagnostics.storageUri",
            ["'nosuchdiag', which is not defined in this lab", "demodiag, otherdiag"],
            id="undefined-storage-account",
        ),
        pytest.param(
            edit("https://demodiag.blob.core.windows.net/", "https://demodiag.blob.x/c/d"),
            "https://demodiag.blob.x/c/d",
            f"{VM1}.bootDiagnostics.storageUri",
            ["https://<account>.blob.core.windows.net/"],
            id="storage-uri-with-a-path",
        ),
        pytest.param(
            edit('adminPassword: "Passw0rd!"', 'adminPassword: "password"'),
            'adminPassword: "password"',
            f"{VM1}.adminPassword",
            ["between 6-72 characters", "at least 3 of password complexity requirements"],
            id="weak-password",
        ),
        pytest.param(
            edit('adminPassword: "Passw0rd!"', 'adminPassword: "P@ssw0rd"'),
            'adminPassword: "P@ssw0rd"',
            f"{VM1}.adminPassword",
            ["not allowed", "common passwords"],
            id="disallowed-password",
        ),
        pytest.param(
            edit("adminUsername: azureuser", "adminUsername: root"),
            "adminUsername: root",
            f"{VM1}.adminUsername",
            ["not allowed", "Reserved names are:"],
            id="reserved-admin-username",
        ),
        pytest.param(
            edit("adminUsername: azureuser", "adminUsername: Azure.User"),
            "adminUsername: Azure.User",
            f"{VM1}.adminUsername",
            ["lower-case letter or an underscore"],
            id="bad-admin-username",
        ),
        pytest.param(
            edit("size: {vcpus: 1, memoryMiB: 512}", "size: {vcpus: 16, memoryMiB: 512}"),
            "vcpus: 16",
            f"{VM2}.size.vcpus",
            ["between 1 and 8"],
            id="too-many-vcpus",
        ),
        pytest.param(
            edit("size: {vcpus: 1, memoryMiB: 512}", "size: {vcpus: 1, memoryMiB: 64}"),
            "memoryMiB: 64",
            f"{VM2}.size.memoryMiB",
            ["between 128 and 16384"],
            id="too-little-memory",
        ),
        pytest.param(
            edit("size: Standard_B1s", "size: Standard_Huge"),
            "Standard_Huge",
            f"{VM1}.size",
            ["not known to the lab", "Standard_B1s", "vcpus: 1-8, memoryMiB: 128-16384"],
            id="unknown-size-name",
        ),
        pytest.param(
            edit("size: Standard_B1s", "size: [1, 2]"),
            "size: [1, 2]",
            f"{VM1}.size",
            ["Azure size name such as Standard_B1s", "{vcpus: 1-8, memoryMiB: 128-16384}"],
            id="size-of-wrong-type",
        ),
        pytest.param(
            edit("osType: Linux", "osType: MacOS"),
            "osType: MacOS",
            f"{VM1}.osType",
            ["'Linux' or 'Windows'"],
            id="bad-os-type",
        ),
        pytest.param(
            edit("defaultAction: Allow", "defaultAction: Block"),
            "defaultAction: Block",
            "resourceGroups[0].storageAccounts[0].networkRuleSet.defaultAction",
            ["'Allow' or 'Deny'"],
            id="bad-default-action",
        ),
        pytest.param(
            edit('kernelArgs: ""', 'kernelArgs: "console=ttyS0\\nquiet"'),
            "kernelArgs:",
            f"{VM1}.kernelArgs",
            ["one line", "without newlines"],
            id="kernel-args-with-newline",
        ),
        pytest.param(
            edit('kernelArgs: ""', 'kernelArgs: ""\n        bootMessages: silent'),
            "bootMessages: silent",
            f"{VM1}.bootMessages",
            ["'quiet' or 'normal'"],
            id="bad-boot-messages",
        ),
        pytest.param(
            edit('kernelArgs: ""', 'kernelArgs: ""\n        hyperVGeneration: V3'),
            "hyperVGeneration: V3",
            f"{VM1}.hyperVGeneration",
            ["'V1' or 'V2'"],
            id="bad-generation",
        ),
        pytest.param(
            edit("location: westeurope", "location: West Europe"),
            "location:",
            "location",
            ["lower-case letters and digits", "westeurope"],
            id="bad-location",
        ),
        pytest.param(
            edit("8f6a2c1e-5b3d-4c7a-9e21-0d4b6f3a9c10", "not-a-guid"),
            "subscriptionId:",
            "subscriptionId",
            ["not a GUID", "8-4-4-4-12"],
            id="bad-subscription-id",
        ),
        pytest.param(
            edit("tags: {role: web}", "tags: {'a/b': web}"),
            "tags: {'a/b'",
            f'{VM1}.tags["a/b"]',
            ["must not contain"],
            id="bad-tag-name",
        ),
    ],
)
def test_invalid_value_is_located(text: str, needle: str, field: str, says: list[str]) -> None:
    error = fails(text)
    assert error.field == field
    assert error.line == line_of(text, needle)
    assert error.source == SOURCE
    for phrase in says:
        assert phrase in error.message, error.message


def test_fixed_lines_for_a_few_errors() -> None:
    # Line numbers written out, so the line_of() helper is not the only witness.
    assert fails(edit("name: vm2", "name: vm2-")).line == 20
    assert fails(edit("https://demodiag.", "http://demodiag.")).line == 17
    assert (
        fails(edit("        image: tiny\n", "        image: tiny\n        colour: red\n")).line
        == 13
    )


def test_unknown_image_lists_known_ones_and_how_to_build() -> None:
    text = edit("image: tiny", "image: debian")
    error = fails(text, known_images=["tiny", "alpine"])
    assert (error.line, error.field) == (12, f"{VM1}.image")
    assert "image 'debian' is not a known image" in error.message
    assert "known images: alpine, tiny" in error.message
    assert "lab image build debian" in error.message
    parse(text)  # without a catalogue the image is not checked
    assert "no images are built yet" in fails(text, known_images=[]).message


def test_image_name_must_be_safe() -> None:
    error = fails(edit("image: tiny", "image: ../etc"))
    assert error.field == f"{VM1}.image"
    assert "letters, digits" in error.message


def test_unknown_field_says_which_fields_are_allowed() -> None:
    text = edit("        image: tiny\n", "        image: tiny\n        colour: red\n")
    error = fails(text)
    assert (error.line, error.field) == (line_of(text, "colour"), f"{VM1}.colour")
    assert "unknown field 'colour'" in error.message
    assert "allowed fields here are: name, image, size, osType, adminUsername" in error.message


def test_misspelt_field_is_reported_as_unknown_first_with_a_suggestion() -> None:
    text = edit("image: tiny", "imgae: tiny")
    error = fails(text)
    assert (error.line, error.field) == (12, f"{VM1}.imgae")
    assert "did you mean 'image'?" in error.message
    # The consequent missing field is listed too, located at the VM's mapping.
    assert f"{SOURCE}:11: {VM1}.image: required field 'image' is missing" in error.message


def test_snake_case_keys_are_unknown_with_a_camel_case_hint() -> None:
    error = fails(edit("adminUsername: azureuser", "admin_username: azureuser"))
    assert error.field == f"{VM1}.admin_username"
    assert "did you mean 'adminUsername'? keys are camelCase" in error.message


def test_unknown_top_level_and_nested_fields() -> None:
    error = fails("resourceGroups: []\nregion: westeurope\n")
    assert (error.line, error.field) == (2, "region")
    assert "subscriptionId, location, resourceGroups" in error.message
    error = fails(edit("{defaultAction: Allow}", "{defaultAction: Allow, bypass: None}"))
    assert error.field == "resourceGroups[0].storageAccounts[0].networkRuleSet.bypass"
    assert "allowed fields here are: defaultAction" in error.message
    error = fails(edit("{vcpus: 1, memoryMiB: 512}", "{vcpus: 1, memoryMiB: 512, gpus: 1}"))
    assert error.field == f"{VM2}.size.gpus"
    assert "allowed fields here are: vcpus, memoryMiB" in error.message


def test_missing_required_field_is_located_at_its_parent_mapping() -> None:
    text = edit('        adminPassword: "Passw0rd!"\n  - name: other-rg', "  - name: other-rg")
    error = fails(text)
    assert (error.line, error.field) == (20, f"{VM2}.adminPassword")
    assert "required field 'adminPassword' is missing" in error.message
    error = fails("location: westeurope\n")
    assert (error.line, error.field) == (1, "resourceGroups")
    error = fails("resourceGroups:\n  - tags: {}\n")
    assert (error.line, error.field) == (2, "resourceGroups[0].name")


@pytest.mark.parametrize(
    ("old", "new", "needle", "field", "says"),
    [
        ("name: vm2", "name: 2", "name: 2", f"{VM2}.name", "YAML reads '2' as the number 2"),
        (
            "name: vm2",
            "name: no",
            "name: no",
            f"{VM2}.name",
            "YAML reads 'no' as the boolean false",
        ),
        (
            "allowSharedKeyAccess: true",
            "allowSharedKeyAccess: 'yes'",
            "allowSharedKeyAccess",
            "resourceGroups[0].storageAccounts[0].allowSharedKeyAccess",
            "must be true or false",
        ),
        (
            "{enabled: true, ",
            "{enabled: 1, ",
            "enabled: 1",
            f"{VM1}.bootDiagnostics.enabled",
            "must be true or false",
        ),
        ("vcpus: 1,", "vcpus: '1',", "vcpus", f"{VM2}.size.vcpus", "must be a whole number"),
        ("vcpus: 1,", "vcpus: 1.5,", "vcpus", f"{VM2}.size.vcpus", "must be a whole number"),
        ("{env: demo}", "[env]", "tags: [env]", "resourceGroups[0].tags", "must be a mapping"),
        (
            "    storageAccounts:\n      - name: otherdiag\n",
            "    storageAccounts: {name: otherdiag}\n",
            "storageAccounts: {",
            "resourceGroups[1].storageAccounts",
            "must be a list (items written as '- item'), but YAML reads it as a mapping",
        ),
        ("{role: web}", "{role: 1}", "role: 1", f"{VM1}.tags.role", "put it in quotes"),
        (
            "    storageAccounts:\n      - name: otherdiag\n",
            "    storageAccounts: otherdiag\n",
            "storageAccounts: otherdiag",
            "resourceGroups[1].storageAccounts",
            "must be a list (items written as '- item'), but YAML reads 'otherdiag' as text",
        ),
        (
            "  - name: other-rg\n",
            "  - name: other-rg\n    virtualMachines: {oops: 1}\n",
            "oops",
            "resourceGroups[1].virtualMachines",
            "must be a list",
        ),
        (
            "    storageAccounts:\n      - name: otherdiag\n",
            "    storageAccounts:  # none yet\n",
            "# none yet",
            "resourceGroups[1].storageAccounts",
            "but it is empty (null); write [] for an empty list",
        ),
        (
            '{enabled: true, storageUri: "https://demodiag.blob.core.windows.net/"}',
            "true",
            "bootDiagnostics: true",
            f"{VM1}.bootDiagnostics",
            "must be a mapping of field: value pairs",
        ),
        (
            'adminPassword: "Passw0rd!"',
            "adminPassword: 12345678",
            "adminPassword",
            f"{VM1}.adminPassword",
            "must be text, but YAML reads it as a number",
        ),
    ],
)
def test_wrong_types_are_located(old: str, new: str, needle: str, field: str, says: str) -> None:
    text = edit(old, new)
    error = fails(text)
    assert (error.line, error.field) == (line_of(text, needle), field)
    assert says in error.message, error.message


def test_password_is_never_echoed() -> None:
    for bad in ('"hunter2hunter"', "12345678", '"P@ssw0rd"', '"Hunter2!\\n"'):
        error = fails(edit('adminPassword: "Passw0rd!"', f"adminPassword: {bad}"))
        assert bad.strip('"') not in error.message


def test_null_list_says_how_to_write_an_empty_one() -> None:
    error = fails("resourceGroups:\n")
    assert (error.line, error.field) == (1, "resourceGroups")
    assert "it is empty (null)" in error.message
    assert "write [] for an empty list" in error.message


def test_several_problems_are_all_located() -> None:
    text = edit("name: vm2", "name: vm2.").replace("name: demodiag", "name: DEMO", 1)
    error = fails(text)
    assert (error.line, error.field) == (7, "resourceGroups[0].storageAccounts[0].name")
    assert "and 1 more problem:" in error.message
    assert f"{SOURCE}:20: {VM2}.name: The VM name 'vm2.' is invalid" in error.message


# --- the YAML itself ----------------------------------------------------------------------------


def test_yaml_syntax_error_reports_the_line() -> None:
    text = edit("location: westeurope", "location: [westeurope")
    error = fails(text)
    assert error.line == 3  # where the parser gave up
    assert error.field is None
    assert "invalid YAML: while parsing a flow sequence (started at line 2)" in error.message
    error = fails(edit("  - name: demo-rg", "  - name: demo-rg\n  bad: : :"))
    assert error.line == 5
    assert "invalid YAML" in error.message


def test_tab_indentation_gets_a_hint() -> None:
    error = fails(edit("    tags: {env: demo}", "\ttags: {env: demo}"))
    assert error.line == 5
    assert "indent with spaces, not tabs" in error.message


def test_non_printable_characters_are_located() -> None:
    error = fails(edit("location: westeurope", "location: west\x07europe"))
    assert error.line == 2
    assert "invalid YAML" in error.message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file(text: str) -> None:
    error = fails(text)
    assert error.line == 1
    assert "empty" in error.message


@pytest.mark.parametrize(
    ("text", "line"),
    [("- a\n- b\n", 1), ("hello\n", 1), ("\n\n42\n", 3), ("~\n", 1), ("'text'\n", 1)],
)
def test_top_level_must_be_a_mapping(text: str, line: int) -> None:
    error = fails(text)
    assert error.line == line
    assert error.field is None
    assert "top level of a lab file must be a mapping" in error.message


def test_duplicate_keys_are_errors() -> None:
    text = edit("    image: tiny\n", "    image: tiny\n        image: other\n")
    error = fails(text)
    assert (error.line, error.field) == (13, f"{VM1}.image")
    assert "duplicate key 'image' (first given at line 12)" in error.message


def test_non_text_keys_are_errors() -> None:
    error = fails(edit("tags: {role: web}", "tags: {yes: web}"))
    assert error.field == f"{VM1}.tags"
    assert "not text" in error.message
    assert "put it in quotes" in error.message
    error = fails("resourceGroups: []\n[a]: 1\n")
    assert error.line == 2


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ("resourceGroups: []\nlocation: !custom x\n", 2, "could not determine a constructor"),
        ("resourceGroups: []\nlocation: 2020-13-45\n", 2, "cannot read the value '2020-13-45'"),
        ("resourceGroups: !!set {a}\n", 1, "unsupported YAML tag"),
        ("resourceGroups: !!omap [a: 1]\n", 1, "unsupported YAML tag"),
        ("resourceGroups:\n  - <<: 1\n", 2, "merge key"),
    ],
)
def test_unusual_yaml_is_refused_with_a_line(text: str, line: int, says: str) -> None:
    error = fails(text)
    assert error.line == line
    assert says in error.message


def test_alias_bombs_and_recursion_are_refused() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for name, prev in zip("bcdefgh", "abcdefg", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]")
    error = fails("\n".join(lines) + "\n")
    assert "too large" in error.message
    error = fails("a: &a [*a]\n")
    assert "nested more than" in error.message
    error = fails("a: " + "[" * 200 + "]" * 200 + "\n")
    assert "nested" in error.message


# --- robustness ---------------------------------------------------------------------------------


def mutated(data: st.DataObject, text: str, bits: st.SearchStrategy[str]) -> str:
    """`text` with 1-4 of its spans replaced by YAML's meaningful bits (`bits`) or odd text."""
    for _ in range(data.draw(st.integers(1, 4))):
        start = data.draw(st.integers(0, len(text)))
        length = data.draw(st.integers(0, 12))
        insert = "".join(data.draw(st.lists(bits | st.text(max_size=3), max_size=3)))
        text = text[:start] + insert + text[start + length :]
    return text

_YAML_BITS = st.sampled_from(
    [":", "-", " ", "  ", "\n", "\t", "{", "}", "[", "]", ",", "'", '"', "&a", "*a", "!", "!!",
     "#", "|", ">", "%", "@", "`", "?", "<<", "~", "null", "true", "no", "0x1", "1e3",
     "2020-13-45", "name", "vm1", "Standard_B1s", "http://", "\x00", "\x85", "\ufeff", "é"]
)  # fmt: skip


@settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.text(max_size=300))
def test_garbage_raises_only_lab_file_errors(text: str) -> None:
    try:
        parse(text, known_images=["tiny"])
    except LabFileError as error:
        assert error.line is None or error.line >= 1


@settings(
    max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(st.data())
def test_mutated_lab_files_raise_only_lab_file_errors(data: st.DataObject) -> None:
    text = mutated(data, BASE, _YAML_BITS)
    try:
        lab = parse(text, known_images=["tiny"])
    except LabFileError as error:
        assert error.line is None or 1 <= error.line <= text.count("\n") + 2
        assert error.message
    else:
        for _, vm in lab.virtual_machines():
            assert 1 <= vm.vcpus <= 8
            assert 128 <= vm.memory_mib <= 16384
