"""Qubit positions and device graphs for Chimera, Pegasus and Zephyr devices (via dwave-networkx).

The graphs come from ``dwave.graphs`` (the successor of ``dwave_networkx``, DESIGN.md §5);
positions are D-Wave's own drawing layouts, so maps look like D-Wave's documentation.
"""

from __future__ import annotations

from typing import Any, Iterable

import networkx as nx
import numpy as np

from qasa.samplers import topology_graph

__all__ = ["device_graph", "positions"]


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
