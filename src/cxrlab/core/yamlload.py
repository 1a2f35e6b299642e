"""YAML read safely: plain data only, text that must be UTF-8, and a bounded document.

PyYAML's safe loader builds no Python objects, but an alias bomb (an anchor repeated by
aliases, nested a few levels: a "billion laughs") is a small file whose document is
billions of nodes. The loader itself shares the repeated nodes, so the file loads fast; it
is the first walk over the document (validation, a line index, a JSON dump) that never
ends. ``compose`` therefore counts aliases while it parses and measures the document as a
walk would see it, with each shared node counted once per place it appears, before anyone
walks it, and refuses documents past ``MAX_NODES``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from cxrlab.core.errors import CxrlabError

# Far above any study file or run record (a few hundred nodes), far below a slow walk.
MAX_ALIASES = 1000
MAX_NODES = 200_000


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader, refusing a document with more than MAX_ALIASES aliases."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.aliases = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_ALIASES} aliases (*name)", event.start_mark
                )
        return super().compose_node(parent, index)


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """A text file that must be UTF-8; anything else is one line naming the byte."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CxrlabError(
            f"{what} {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}): "
            "save it as UTF-8"
        ) from exc


def compose(text: str, source: str) -> yaml.Node | None:
    """The node tree of ``text`` (None for an empty document), checked to be small enough to
    walk. A syntax error raises ``yaml.YAMLError`` (see ``describe``); a bomb ``CxrlabError``."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
    finally:
        loader.dispose()
    if node is not None and expanded_size(node) > MAX_NODES:
        raise CxrlabError(
            f"{source}: the document expands to more than {MAX_NODES} values through its aliases "
            "(an alias bomb?): write the values out"
        )
    return node


def construct(node: yaml.Node) -> Any:
    """The plain data of a node from ``compose``; tags that would build objects raise
    ``yaml.constructor.ConstructorError``."""
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def load(text: str, source: str) -> Any:
    """``compose`` then ``construct``: the plain data of a YAML text, bounded; any problem is
    a ``CxrlabError`` naming the line."""
    try:
        node = compose(text, source)
        return None if node is None else construct(node)
    except yaml.YAMLError as exc:
        hint = (
            "cxrlab reads plain YAML only, never !!python tags"
            if isinstance(exc, yaml.constructor.ConstructorError)
            else "fix the YAML syntax"
        )
        line, problem = describe(exc)
        raise CxrlabError(f"cannot read {source}{f' (line {line})' if line else ''}: {problem}; {hint}") from exc


def describe(exc: yaml.YAMLError) -> tuple[int | None, str]:
    """The line (1-based, when known) and the problem of a YAML error, for one-line messages."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return (mark.line + 1 if mark is not None else None), problem


def expanded_size(root: yaml.Node) -> int:
    """How many nodes a walk of ``root`` visits (shared nodes once per place), without the
    walk: each distinct node is sized once, from its children's sizes. A node that contains
    itself (a recursive alias) is infinite."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children = _children(node)
        if children_done:
            open_nodes.discard(key)
            sizes[key] = min(MAX_NODES + 1, 1 + sum(sizes[id(c)] for c in children))
            continue
        if key in open_nodes:
            return MAX_NODES + 1  # a cycle
        open_nodes.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in open_nodes:
                return MAX_NODES + 1
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []
