"""YAML read with its lines: the node tree composed by PyYAML, turned into plain data by
`Builder`, which records the 1-based line of every field path it creates, so a validation error
on `resourceGroups[0].virtualMachines[1].name` can say where that is in the file. Shared by the
lab-file and the scenario loaders; limits the document's size (anchors and aliases expanded)
and depth, refuses duplicate keys, non-text keys and unknown tags, each as a located error.
"""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any, Final

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from lab.domain.errors import LabFileError

#: Limits on the YAML itself: values after alias expansion, and nesting depth.
MAX_NODES: Final = 20_000
MAX_DEPTH: Final = 32

FieldPath = tuple[str | int, ...]


MAP_TAG: Final = "tag:yaml.org,2002:map"
SEQ_TAG: Final = "tag:yaml.org,2002:seq"
MERGE_TAG: Final = "tag:yaml.org,2002:merge"
NULL_TAG: Final = "tag:yaml.org,2002:null"


class Builder:
    """Builds plain data from YAML nodes, recording the line of every path it creates."""

    def __init__(self, source: str, error: type[LabFileError] = LabFileError) -> None:
        self.source = source
        self.error_type = error
        self.lines: dict[FieldPath, int] = {}
        self.raw: dict[FieldPath, str] = {}
        self.count = 0
        self.constructor = yaml.constructor.SafeConstructor()

    def error(self, message: str, node: Node, path: FieldPath) -> LabFileError:
        return self.error_type(
            message,
            source=self.source,
            line=node.start_mark.line + 1,
            field=format_path(path) or None,
        )

    def build(self, node: Node, path: FieldPath, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise self.error(
                f"the file is too large: it expands to more than {MAX_NODES} values "
                "(check for anchors and aliases that repeat large parts)",
                node,
                path,
            )
        if depth > MAX_DEPTH:
            raise self.error(f"values are nested more than {MAX_DEPTH} levels deep", node, path)
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if isinstance(node, SequenceNode):
            if node.tag != SEQ_TAG:
                raise self.error(f"unsupported YAML tag {node.tag} on a list", node, path)
            items = []
            for index, child in enumerate(node.value):
                self.lines[(*path, index)] = child.start_mark.line + 1
                items.append(self.build(child, (*path, index), depth + 1))
            return items
        if isinstance(node, MappingNode):
            return self.mapping(node, path, depth)
        raise self.error("unsupported YAML node", node, path)  # pragma: no cover

    def scalar(self, node: ScalarNode, path: FieldPath, *, is_key: bool = False) -> Any:
        if not is_key:
            self.raw[path] = node.value
        try:
            return self.constructor.construct_object(node)
        except Exception as exc:  # PyYAML's scalar constructors raise more than YAMLError
            problem = getattr(exc, "problem", None) or str(exc)
            raise self.error(
                f"cannot read the value {node.value!r}: {problem}", node, path
            ) from exc

    def entries(
        self, node: MappingNode, path: FieldPath, depth: int
    ) -> list[tuple[Node, Node, bool]]:
        """The key/value nodes of a mapping with merge keys (``<<: *x``) flattened.

        Each entry says whether it is explicit; explicit keys win over merged ones.
        """
        if depth > MAX_DEPTH:
            raise self.error(f"merges are nested more than {MAX_DEPTH} levels deep", node, path)
        explicit: list[tuple[Node, Node, bool]] = []
        merged: list[tuple[Node, Node, bool]] = []
        for key, value in node.value:
            if isinstance(key, ScalarNode) and key.tag == MERGE_TAG:
                sources = value.value if isinstance(value, SequenceNode) else [value]
                for source in sources:
                    if not isinstance(source, MappingNode) or source.tag != MAP_TAG:
                        raise self.error(
                            "a merge key (<<) must be followed by a mapping or a list of "
                            "mappings (usually an alias such as *defaults)",
                            value,
                            path,
                        )
                    merged.extend(
                        (k, v, False) for k, v, _ in self.entries(source, path, depth + 1)
                    )
            else:
                explicit.append((key, value, True))
        return explicit + merged

    def mapping(self, node: MappingNode, path: FieldPath, depth: int) -> dict[str, Any]:
        if node.tag != MAP_TAG:
            raise self.error(f"unsupported YAML tag {node.tag} on a mapping", node, path)
        result: dict[str, Any] = {}
        key_lines: dict[str, int] = {}
        for key_node, value_node, explicit in self.entries(node, path, depth):
            key = self.key(key_node, path)
            line = key_node.start_mark.line + 1
            if key in key_lines:
                if explicit:
                    raise self.error(
                        f"duplicate key '{key}' (first given at line {key_lines[key]}); "
                        "each key may appear only once in a mapping",
                        key_node,
                        (*path, key),
                    )
                continue
            key_lines[key] = line
            self.lines[(*path, key)] = line
            result[key] = self.build(value_node, (*path, key), depth + 1)
        return result

    def key(self, node: Node, path: FieldPath) -> str:
        if not isinstance(node, ScalarNode):
            raise self.error(
                "a mapping key must be plain text, not a list or a mapping", node, path
            )
        key = self.scalar(node, path, is_key=True)
        if not isinstance(key, str):
            raise self.error(
                f"the key {node.value!r} is not text (YAML reads it as "
                f"{describe(key)}); put it in quotes",
                node,
                path,
            )
        return key


_OPEN = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_CLOSE = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def _check_depth(text: str, source: str, error: type[LabFileError]) -> None:
    """Refuse deep nesting from the event stream, before PyYAML's composer (which recurses)
    meets it: `[[[[...]]]]` a few thousand deep is a located error, not a RecursionError."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, _OPEN):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark is not None else None
                raise error(f"values are nested more than {MAX_DEPTH} levels deep",
                            source=source, line=line, field=None)  # fmt: skip
        elif isinstance(event, _CLOSE):
            depth -= 1


def compose(text: str, source: str, error: type[LabFileError] = LabFileError) -> Node | None:
    """The YAML's node tree (None for an empty document); every syntax problem is an `error`
    located by line."""
    try:
        _check_depth(text, source, error)
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        context = exc.context
        if context and exc.context_mark is not None and exc.context_mark is not mark:
            context += f" (started at line {exc.context_mark.line + 1})"
        parts = [p for p in (context, exc.problem) if p]
        message = "invalid YAML: " + "; ".join(parts or ["cannot parse"])
        if mark is not None:
            message += f" (column {mark.column + 1})"
        if "\t" in (exc.problem or "") or "'\\t'" in (exc.problem or ""):
            message += "; indent with spaces, not tabs"
        line = mark.line + 1 if mark is not None else None
        raise error(message, source=source, line=line, field=None) from exc
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, max(exc.position, 0)) + 1
        raise error(
            f"invalid YAML: {exc.reason} (character {exc.character!r} is not allowed)",
            source=source,
            line=line,
            field=None,
        ) from exc
    except yaml.YAMLError as exc:
        raise error(f"invalid YAML: {exc}", source=source, line=None, field=None) from exc
    except RecursionError as exc:
        raise error(
            "invalid YAML: values are nested too deeply", source=source, line=None, field=None
        ) from exc


def describe(value: Any, *, secret: bool = False) -> str:
    match value:
        case None:
            return "an empty value (null)"
        case bool():
            return "a boolean" if secret else f"the boolean {str(value).lower()}"
        case int() | float():
            return "a number" if secret else f"the number {value!r}"
        case str():
            return "text"
        case list():
            return "a list"
        case dict():
            return "a mapping"
        case bytes():
            return "binary data"
        case date():
            return "a date"
    return type(value).__name__


def format_path(path: FieldPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part, ensure_ascii=False)}]"
    return out
