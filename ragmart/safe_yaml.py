"""YAML from users (contract files, document front matter) loaded within bounds.

PyYAML's `safe_load` refuses arbitrary objects but not size: aliases share one Python object,
so a 528-byte file of nested aliases (`b: [*a, *a, ...]`, nine levels) loads at once into a graph
whose *expanded* tree has billions of nodes, and the first code that walks it (validation, an
error message quoting it) runs for minutes and gigabytes. Nesting is the other edge: PyYAML's
composer recurses once per level, so a file nested 20,000 levels deep raises RecursionError.

Both are measured on the event stream before anything is composed: `yaml.parse` is a state
machine (no recursion), and one pass over its events gives the nesting depth and the expanded
node count, an alias counting as many nodes as the node it names. A file beyond either bound is
refused with one line naming it and the limit; within them, composing is safe (bounded
recursion) and walking the result costs at most MAX_EXPANDED_NODES nodes, whatever the aliases.
"""

from __future__ import annotations

from typing import Any

# Far above any real contract file or front matter (tens to hundreds of nodes), far below what
# hurts: walking 100,000 small nodes takes milliseconds and a few MB.
MAX_EXPANDED_NODES = 100_000
MAX_DEPTH = 64


class YAMLLimitError(ValueError):
    """The YAML is not valid, nests too deeply, or its aliases expand beyond the bound."""


def load_yaml(text: str, source: str) -> Any:
    """The document in `text` (from `source`, named in errors), as `yaml.safe_load` would
    return it, or YAMLLimitError with one line naming `source`, the problem and the fix."""
    import yaml

    try:
        _check_bounds(yaml.parse(text, Loader=yaml.SafeLoader), source)
        return yaml.load(text, Loader=yaml.SafeLoader)  # noqa: S506 - SafeLoader
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())
        raise YAMLLimitError(f"{source}: not valid YAML: {detail}") from None


def _check_bounds(events: Any, source: str) -> None:
    import yaml

    # one counter per open collection; anchors[name] = expanded size of the anchored node
    open_counts: list[int] = []
    open_anchors: list[str | None] = []
    anchors: dict[str, int] = {}
    total = 0

    def add(count: int) -> None:
        nonlocal total
        if open_counts:
            open_counts[-1] += count
        else:
            total += count

    for event in events:
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            if len(open_counts) >= MAX_DEPTH:
                raise YAMLLimitError(
                    f"{source}: nested more than {MAX_DEPTH} levels deep; flatten the document"
                )
            open_counts.append(1)
            open_anchors.append(event.anchor)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            size = open_counts.pop()
            anchor = open_anchors.pop()
            if anchor is not None:
                anchors[anchor] = size
            add(size)
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor is not None:
                anchors[event.anchor] = 1
            add(1)
        elif isinstance(event, yaml.AliasEvent):
            # an undefined alias: the composer reports it with its position below
            add(anchors.get(event.anchor, 1))
        if total + sum(open_counts) > MAX_EXPANDED_NODES:
            raise YAMLLimitError(
                f"{source}: its aliases expand to more than {MAX_EXPANDED_NODES:,} nodes; "
                f"write the values out instead of repeating aliases of aliases"
            )
