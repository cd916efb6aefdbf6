"""The lab-file and scenario loaders under structurally plausible bad input (hypothesis): a
real file's mapping with a value of the wrong type or an odd value put anywhere, a key removed,
an unknown or misspelt key added, then written back as YAML (block or flow style). Every file
either loads or is refused with the loader's own located error (`LabFileError`,
`ScenarioFileError`): the file named, a line inside the file that shows the field, and the field
path; no other exception escapes. Random text and mutated text for the scenario loader too (the
lab file's are in test_labfile.py).

Under `CI=true` hypothesis runs a fixed example set; `LAB_FUZZ_EXAMPLES=N` runs N per test.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from lab.domain.errors import LabFileError, ScenarioFileError
from lab.domain.labfile import parse_lab_definition
from lab.domain.scenario import parse_scenario
from tests.unit.test_labfile import BASE, mutated

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("LAB_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip

LAB = yaml.safe_load(BASE)
SCENARIOS = {p.parent.name: yaml.safe_load(p.read_text())
             for p in sorted((REPO / "scenarios").glob("*/scenario.yaml"))}  # fmt: skip

#: Keys the real models have, so added keys are sometimes right in the wrong place.
LAB_KEYS = ["name", "image", "size", "vcpus", "memoryMiB", "adminUsername", "adminPassword",
            "bootDiagnostics", "enabled", "storageUri", "kernelArgs", "tags", "osType",
            "storageAccounts", "virtualMachines", "scaleSets", "resourceGroups", "location",
            "subscriptionId", "allowSharedKeyAccess", "networkRuleSet", "defaultAction", "sku",
            "capacity", "upgradePolicy", "mode", "virtualMachineProfile", "diagnosticsProfile",
            "computerNamePrefix", "imag", "admin_username", "Name"]  # fmt: skip
SCENARIO_KEYS = ["title", "level", "story", "objective", "image", "breaks", "checks", "hints",
                 "timeLimitMinutes", "admin", "checkLogin", "stuck", "bootTimeoutSeconds",
                 "vcpus", "memoryMib", "write", "append", "replace", "remove", "chmod", "symlink",
                 "fill", "kernelArg", "content", "mode", "old", "new", "target", "leaveMib",
                 "name", "command", "expect", "status", "user", "password", "titel",
                 "time_limit_minutes"]  # fmt: skip

_ODD_TEXT = st.sampled_from(
    ["", " ", "..", "/etc/../x", "etc/fstab", "(", "[a-", "*", "\\", "0777", "0999", "99999",
     "-1", "yes", "null", "~", "2020-01-01", "Standard_B1s", "Standard_NOPE", "http://x/",
     "https://nosuch.blob.core.windows.net/", "é" * 70, "x" * 2000, "a\nb", "\t", "#x", "&a",
     "Passw0rd!", "root", "beginner", "expert", "tiny", "UPPER", "-", "a" * 65]
)  # fmt: skip
_SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**40), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | _ODD_TEXT | st.text(max_size=20)
)  # fmt: skip


def _values(keys: list[str]) -> st.SearchStrategy[Any]:
    """Wrong types and odd values: scalars, lists and mappings whose keys are real ones."""
    return st.recursive(
        _SCALARS,
        lambda inner: st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(keys) | st.text(max_size=8), inner, max_size=3),
        max_leaves=8,
    )


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*prefix, index))
    return found


def _at(node: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


def _mutate(data: st.DataObject, doc: Any, keys: list[str]) -> Any:
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        paths = _paths(doc)
        path = data.draw(st.sampled_from(paths), label="path")
        action = data.draw(st.sampled_from(["set", "set", "delete", "add"]), label="action")
        if not path:
            if action == "set":
                doc = data.draw(_values(keys), label="new document")
            continue
        parent, last = _at(doc, path[:-1]), path[-1]
        if action == "set":
            parent[last] = data.draw(_values(keys), label="value")
        elif action == "delete":
            del parent[last]
        elif isinstance(_at(doc, path), dict):
            key = data.draw(st.sampled_from(keys) | st.text(min_size=1, max_size=8), label="key")
            _at(doc, path)[key] = data.draw(_values(keys), label="added value")
    return doc


def _dump(data: st.DataObject, doc: Any) -> str:
    flow = data.draw(st.sampled_from([False, None, True]), label="flow style")
    return yaml.safe_dump(doc, default_flow_style=flow, sort_keys=False, allow_unicode=True)


_PART = re.compile(r'\.?([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]')


def _parts(field: str) -> list[str | int]:
    """`resourceGroups[0].tags["a b"]` -> ["resourceGroups", 0, "tags", "a b"]."""
    parts: list[str | int] = []
    pos = 0
    while pos < len(field):
        m = _PART.match(field, pos)
        assert m is not None, (field, pos)
        name, index, quoted = m.groups()
        parts.append(name if name is not None else int(index) if index else json.loads(quoted))
        pos = m.end()
    return parts


def _entries(node: MappingNode) -> list[tuple[Node, Node]]:
    explicit = [(k, v) for k, v in node.value if k.tag != "tag:yaml.org,2002:merge"]
    merged = []
    for k, v in node.value:
        if k.tag == "tag:yaml.org,2002:merge":
            for source in v.value if isinstance(v, SequenceNode) else [v]:
                if isinstance(source, MappingNode):
                    merged += _entries(source)
    return explicit + merged


def _expected_line(text: str, parts: list[str | int]) -> int:
    """Where the field is, found independently of the loader: walk the composed YAML along the
    path; a mapping entry is at its key, a list item where it starts; a part that is not there
    (a missing field) leaves the line of the deepest part that is."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    assert node is not None
    line = node.start_mark.line + 1
    for part in parts:
        if isinstance(node, MappingNode):
            found = next(((k, v) for k, v in _entries(node) if isinstance(k, ScalarNode)
                          and str(yaml.safe_load(k.value) if k.style is None else k.value)
                          == str(part)), None)  # fmt: skip
            if found is None:
                break
            line, node = found[0].start_mark.line + 1, found[1]
        elif isinstance(node, SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _assert_located(error: LabFileError, text: str, source: str) -> None:
    assert error.source == source and error.message.startswith(f"{source}:"), error.message
    lines = re.split("\r\n|[\r\n\x85\u2028\u2029]", text)  # YAML's line breaks
    assert error.line is not None and 1 <= error.line <= len(lines), (error.line, text)
    if error.field is None:
        return  # about the document as a whole (not YAML, not a mapping, too large, ...)
    assert error.message.startswith(f"{source}:{error.line}: {error.field}: "), error.message
    expected = _expected_line(text, _parts(error.field))
    if "key" in error.message.partition("\n")[0]:
        # A bad key (not text, a duplicate) is located at that key, inside the field named.
        assert error.line >= expected, (error.message, expected, text)
    else:
        assert error.line == expected, (error.message, expected, text)


@FUZZ
@given(st.data())
def test_lab_files_with_wrong_values_and_keys_fail_located(data: st.DataObject) -> None:
    text = _dump(data, _mutate(data, LAB, LAB_KEYS))
    try:
        lab = parse_lab_definition(text, source="fuzz.yaml", known_images=["tiny"])
    except LabFileError as error:
        assert type(error) is LabFileError and error.code == "InvalidLabDefinition"
        _assert_located(error, text, "fuzz.yaml")
    else:  # what loads is within the lab's limits
        for _, vm in lab.virtual_machines():
            assert 1 <= vm.vcpus <= 8 and 128 <= vm.memory_mib <= 16384


@FUZZ
@given(st.data())
def test_scenarios_with_wrong_values_and_keys_fail_located(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(SCENARIOS)), label="scenario")
    text = _dump(data, _mutate(data, SCENARIOS[name], SCENARIO_KEYS))
    source = f"scenarios/{name}/scenario.yaml"
    try:
        scenario = parse_scenario(text, name=name, source=source)
    except ScenarioFileError as error:
        assert error.code == "InvalidScenario"
        _assert_located(error, text, source)
    else:
        assert scenario.checks and all(b.__class__.__name__ for b in scenario.breaks)
        assert 30 <= scenario.boot_timeout_seconds <= 1800


_YAML_BITS = st.sampled_from(
    [":", "-", " ", "  ", "\n", "\t", "{", "}", "[", "]", ",", "'", '"', "&a", "*a", "!", "!!",
     "!!python/object:os.system", "#", "|", ">", "%", "@", "`", "?", "<<", "~", "null", "true",
     "0x1", "1e3", "\x00", "\x85", "\ufeff", "é", "write", "checks", "- {name: c}", "kernelArg"]
)  # fmt: skip
FSTAB = (REPO / "scenarios" / "fstab-typo" / "scenario.yaml").read_text()


@FUZZ
@given(st.text(max_size=300) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_scenario_garbage_raises_only_scenario_errors(text: str) -> None:
    try:
        parse_scenario(text, name="garbage", source="g.yaml")
    except ScenarioFileError as error:
        _assert_located(error, text, "g.yaml")


@FUZZ
@given(st.data())
def test_mutated_scenario_text_raises_only_scenario_errors(data: st.DataObject) -> None:
    text = mutated(data, FSTAB, _YAML_BITS)
    try:
        parse_scenario(text, name="fstab-typo", source="s.yaml")
    except ScenarioFileError as error:
        _assert_located(error, text, "s.yaml")


@pytest.mark.parametrize("loader", ["lab", "scenario"])
def test_alias_bombs_and_deep_nesting_are_refused_with_a_line(loader: str) -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for name, prev in zip("bcdefgh", "abcdefg", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 10)}]")
    for text, says, line in (
        ("\n".join(lines) + "\n", "too large", 1),  # where the repeated anchor is
        ("a: &a [*a]\n", "nested", 1),
        # Deeper than PyYAML's composer can recurse: refused from the event stream.
        ("a: 1\nb: " + "[" * 5000 + "]" * 5000 + "\n", "nested", 2),
        ("a:\n" + "".join("  " * n + f"k{n}:\n" for n in range(1, 60)), "nested", 33),
    ):
        with pytest.raises(LabFileError) as info:
            if loader == "lab":
                parse_lab_definition(text, source="b.yaml")
            else:
                parse_scenario(text, name="bomb", source="b.yaml")
        assert says in info.value.message and info.value.line == line, info.value.message
        assert isinstance(info.value, ScenarioFileError) == (loader == "scenario")
