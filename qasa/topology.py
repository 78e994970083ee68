"""Qubit positions and device graphs for Chimera, Pegasus and Zephyr devices (via dwave-networkx).

The graphs come from ``dwave.graphs`` (the successor of ``dwave_networkx``, DESIGN.md §5);
positions are D-Wave's own drawing layouts, so maps look like D-Wave's documentation.
"""

from __future__ import annotations

from typing import Any, Iterable

import networkx as nx
import numpy as np

from qasa.samplers import topology_graph

__all__ = ["device_graph", "positions", "coupler_classes", "COUPLER_CLASSES"]

#: Coupler classes per topology. Chimera: ``internal`` (inside a unit cell, the K4,4 bipartite
#: couplers) and ``external`` (between cells). Pegasus and Zephyr: ``internal`` (between qubits of
#: different orientation), ``external`` (same orientation, consecutive along the line: z differs)
#: and ``odd`` (same orientation and line position, the paired k offsets).
COUPLER_CLASSES = {"chimera": ("internal", "external"), "pegasus": ("internal", "external", "odd"),
                   "zephyr": ("internal", "external", "odd")}


def device_graph(device: dict[str, Any]) -> nx.Graph:
    """The working graph of a recorded device: its nodelist and edgelist (or the full topology).

    Raises:
        ValueError: if the device has no topology and no nodelist.
    """
    ttype, shape = device.get("topology_type"), device.get("topology_shape")
    if ttype is not None:
        full, _ = topology_graph(ttype, shape)
        g = nx.Graph()
        nodes = device.get("nodelist")
        g.add_nodes_from((n, full.nodes[n]) for n in (nodes if nodes is not None else full.nodes))
        edges = device.get("edgelist")
        g.add_edges_from(map(tuple, edges) if edges is not None else
                         (e for e in full.edges if e[0] in g and e[1] in g))
        g.graph.update(full.graph)
        return g
    if device.get("nodelist") is None:
        raise ValueError("device has neither a topology nor a nodelist")
    g = nx.Graph()
    g.add_nodes_from(device["nodelist"])
    g.add_edges_from(map(tuple, device.get("edgelist") or []))
    return g


def positions(device: dict[str, Any], nodes: Iterable[int] | None = None) -> dict[int, np.ndarray]:
    """2-D drawing positions of qubits: D-Wave's topology layout, or a spring layout without topology."""
    import dwave.graphs as dg

    ttype, shape = device.get("topology_type"), device.get("topology_shape")
    if ttype is None:
        g = device_graph(device)
        pos = nx.spring_layout(g, seed=0) if g.number_of_edges() else \
            {n: np.array([i % 64, -(i // 64)], float) for i, n in enumerate(sorted(g.nodes))}
    else:
        full, _ = topology_graph(ttype, shape)
        layout = {"chimera": dg.chimera_layout, "pegasus": dg.pegasus_layout, "zephyr": dg.zephyr_layout}[ttype]
        pos = layout(full)
    wanted = pos.keys() if nodes is None else nodes
    return {int(n): np.asarray(pos[n]) for n in wanted if n in pos}


def coupler_classes(topology_type: str, topology_shape: list[int] | None,
                    edges: Iterable[tuple[int, int]]) -> list[str]:
    """Class of each coupler (see :data:`COUPLER_CLASSES`), from dwave-networkx coordinates."""
    import dwave.graphs as dg

    from qasa.samplers import topology_graph

    _, shape = topology_graph(topology_type, topology_shape)
    edges = list(edges)
    if topology_type == "chimera":
        conv = dg.chimera_coordinates(*shape)
        out = []
        for u, v in edges:
            a, b = conv.linear_to_chimera(u), conv.linear_to_chimera(v)
            out.append("internal" if a[:2] == b[:2] else "external")
        return out
    if topology_type == "pegasus":
        conv, to, zi = dg.pegasus_coordinates(shape[0]), "linear_to_pegasus", 3
    elif topology_type == "zephyr":
        conv, to, zi = dg.zephyr_coordinates(*shape), "linear_to_zephyr", 4
    else:
        raise ValueError(f"unknown topology {topology_type!r}")
    f = getattr(conv, to)
    out = []
    for u, v in edges:
        a, b = f(u), f(v)
        out.append("internal" if a[0] != b[0] else "external" if a[zi] != b[zi] else "odd")
    return out
