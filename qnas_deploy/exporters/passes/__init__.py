"""IR -> IR passes: every target-specific rewrite of the integer graph, one module each.

A pass is a pure function ``(graph, options) -> graph`` that leaves its input alone, plus
the properties it needs before it runs and the ones it guarantees after. A target
(``targets.py``) is an ordered list of passes; :func:`run_passes` checks every pass's
``requires`` before it and ``ensures`` after it, so a list in the wrong order, or a pass
that does not do what it says, fails at export instead of producing a wrong file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..ir import Graph


@dataclass(frozen=True)
class Property:
    """A statement about a graph; ``violations`` names the nodes for which it is false."""

    text: str
    violations: Callable[[Graph], list[str]]

    def check(self, graph: Graph, where: str) -> None:
        bad = self.violations(graph)
        if bad:
            raise RuntimeError(f"{where}: '{self.text}' does not hold for {', '.join(bad[:5])}")


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable[..., Graph]
    requires: tuple[Property, ...] = ()
    ensures: tuple[Property, ...] = ()


def run_passes(graph: Graph, passes, options) -> Graph:
    for p in passes:
        for prop in p.requires:
            prop.check(graph, f"before pass {p.name}")
        graph = p.run(graph, options)
        for prop in p.ensures:
            prop.check(graph, f"after pass {p.name}")
    return graph


def quantized_io(graph: Graph, node) -> bool:
    """Whether ``node`` reads and writes quantized tensors (an integer kernel)."""
    return graph.tensor(node.inputs[0]).quantized and graph.tensor(node.output).quantized
