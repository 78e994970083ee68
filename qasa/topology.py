"""Qubit coordinates, coupler classes and device graphs for Chimera, Pegasus and Zephyr devices.

The graphs and coordinates come from ``dwave.graphs`` (the successor of ``dwave_networkx``,
docs/DESIGN.md §5); positions are D-Wave's own drawing layouts, so maps look like D-Wave's documentation.

Per-qubit features (:func:`qubit_table`):

- Chimera ``(i, j, u, k)``: ``row = i``, ``col = j`` of the unit cell, ``orientation = u``,
  ``index = k`` (position in the cell's shore).
- Pegasus ``(u, w, k, z)`` and Zephyr ``(u, w, k, j, z)``: ``orientation = u``; a qubit runs along
  line ``w`` and sits at position ``z`` along it, so ``col = w, row = z`` for vertical qubits
  (u = 0) and ``row = w, col = z`` for horizontal ones; ``index = k`` (and ``j`` for Zephyr).
- ``distance``: Euclidean distance from the chip centre in D-Wave's layout, normalized so that the
  farthest qubit of the full graph is at 1; ``degree``: couplers to *working* neighbours.
"""

from __future__ import annotations

import functools
import math

from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import networkx as nx
import numpy as np

from qasa.errors import SamplerError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DEFAULT_SHAPES", "topology_graph", "check_shape", "MAX_QUBITS", "device_graph", "positions", "coupler_classes", "COUPLER_CLASSES", "qubit_table", "edge_table",
           "layout_table", "tile_positions"]

#: Coupler classes per topology. Chimera: ``internal`` (inside a unit cell, the K4,4 bipartite
#: couplers) and ``external`` (between cells). Pegasus and Zephyr: ``internal`` (between qubits of
#: different orientation), ``external`` (same orientation, consecutive along the line: z differs)
#: and ``odd`` (same orientation and line position, the paired k offsets).
COUPLER_CLASSES = {"chimera": ("internal", "external"), "pegasus": ("internal", "external", "odd"),
                   "zephyr": ("internal", "external", "odd")}

#: Full-size shapes of the production topologies: Chimera C16 (2000Q), Pegasus P16 (Advantage),
#: Zephyr Z12 (Advantage2).
DEFAULT_SHAPES: dict[str, list[int]] = {"chimera": [16, 16, 4], "pegasus": [16], "zephyr": [12, 4]}


def topology_graph(topology_type: str, topology_shape: list[int] | None = None) -> tuple[nx.Graph, list[int]]:
    """Return the networkx graph of a D-Wave topology (fully yielded) and its normalized shape.

    Chimera ``[m]`` means ``[m, m, 4]``, Zephyr ``[m]`` means ``[m, 4]``; Pegasus keeps ``[m]``
    (the fabric-only graph, as on the QPU).

    The graph is built once per (type, shape) and shared: treat it as read-only (copy it to modify).

    Raises:
        SamplerError: for an unknown topology type or a malformed shape.
    """
    try:
        key = None if topology_shape is None else tuple(int(s) for s in topology_shape)
    except (TypeError, ValueError):  # a malformed shape: the uncached path names the error
        return _topology_graph(topology_type, topology_shape)
    graph, shape = _cached_topology_graph(topology_type, key)
    return graph, list(shape)


@functools.lru_cache(maxsize=8)
def _cached_topology_graph(topology_type: str, shape: tuple[int, ...] | None) -> tuple[nx.Graph, list[int]]:
    return _topology_graph(topology_type, None if shape is None else list(shape))


def _topology_graph(topology_type: str, topology_shape: list[int] | None) -> tuple[nx.Graph, list[int]]:
    import dwave.graphs as dg

    shape = check_shape(topology_type, topology_shape)
    try:
        if topology_type == "chimera":
            return dg.chimera_graph(*shape), shape
        if topology_type == "pegasus":
            return dg.pegasus_graph(shape[0], fabric_only=True), shape
        return dg.zephyr_graph(*shape), shape
    except (TypeError, ValueError, IndexError) as exc:
        raise SamplerError(f"bad {topology_type} shape {shape!r}: {exc}") from exc


#: Largest graph a software backend builds (qubits; a full Advantage has 5 640, Advantage2 4 800).
MAX_QUBITS = 50_000

_SHAPE_FORMS = {"chimera": "m or m,n,t (e.g. 16 or 16,16,4 for C16)", "pegasus": "one number m (e.g. 16 for P16)",
                "zephyr": "m or m,t (e.g. 12 or 12,4 for Z12)"}


def check_shape(topology_type: str, topology_shape: list[int] | None) -> list[int]:
    """The full shape of a topology (defaults filled in), or :class:`SamplerError` naming the value.

    Chimera takes ``m`` or ``m,n,t`` (``m`` means ``m,m,4``), Pegasus ``m >= 2``, Zephyr ``m`` or
    ``m,t`` (``m`` means ``m,4``); every dimension is a positive integer, and the graph holds at
    most :data:`MAX_QUBITS` qubits (Chimera ``2tmn``, Pegasus ``24m(m-1)``, Zephyr ``4tm(2m+1)``).
    No shape is truncated: a Chimera shape given for Pegasus is refused.
    """
    if topology_type not in DEFAULT_SHAPES:
        raise SamplerError(f"unknown topology {topology_type!r}; choose one of {sorted(DEFAULT_SHAPES)}")
    if topology_shape is None:
        return list(DEFAULT_SHAPES[topology_type])
    shape = list(topology_shape)
    allowed = {"chimera": (1, 3), "pegasus": (1,), "zephyr": (1, 2)}[topology_type]
    shown = ",".join(map(str, shape))
    if len(shape) not in allowed:
        raise SamplerError(f"shape {shown!r} has {len(shape)} dimension(s); a {topology_type} shape is "
                           f"{_SHAPE_FORMS[topology_type]}")
    if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in shape):
        raise SamplerError(f"shape {shown!r}: every {topology_type} dimension must be a positive integer")
    shape = [int(v) for v in shape]
    if topology_type == "chimera":
        shape = shape * 2 + [4] if len(shape) == 1 else shape
        qubits = 2 * shape[0] * shape[1] * shape[2]
    elif topology_type == "pegasus":
        if shape[0] < 2:
            raise SamplerError(f"pegasus shape {shown!r}: m must be at least 2")
        qubits = 24 * shape[0] * (shape[0] - 1)
    else:
        shape = shape + [4] if len(shape) == 1 else shape
        qubits = 4 * shape[1] * shape[0] * (2 * shape[0] + 1)
    if qubits > MAX_QUBITS:
        raise SamplerError(f"{topology_type} shape {shown!r} has {qubits} qubits; at most {MAX_QUBITS} are allowed")
    return shape


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
    ttype, shape = device.get("topology_type"), device.get("topology_shape")
    if ttype is None:
        g = device_graph(device)
        pos = nx.spring_layout(g, seed=0) if g.number_of_edges() else \
            {n: np.array([i % 64, -(i // 64)], float) for i, n in enumerate(sorted(g.nodes))}
    else:
        _, shape = topology_graph(ttype, shape)
        pos = _full_layout(ttype, tuple(shape))
    wanted = pos.keys() if nodes is None else nodes
    return {int(n): np.asarray(pos[n]) for n in wanted if n in pos}


@functools.lru_cache(maxsize=8)
def _full_layout(topology_type: str, shape: tuple[int, ...]) -> dict[int, np.ndarray]:
    """D-Wave's drawing layout of the full topology, computed once per (type, shape) (read-only)."""
    import dwave.graphs as dg

    full, _ = topology_graph(topology_type, list(shape))
    layout = {"chimera": dg.chimera_layout, "pegasus": dg.pegasus_layout, "zephyr": dg.zephyr_layout}[topology_type]
    return {int(n): np.asarray(xy) for n, xy in layout(full).items()}


def coupler_classes(topology_type: str, topology_shape: list[int] | None,
                    edges: Iterable[tuple[int, int]]) -> list[str]:
    """Class of each coupler (see :data:`COUPLER_CLASSES`), from dwave-networkx coordinates."""
    import dwave.graphs as dg

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
    coord = {n: f(n) for n in {n for e in edges for n in e}}       # once per qubit, not per coupler end
    out = []
    for u, v in edges:
        a, b = coord[u], coord[v]
        out.append("internal" if a[0] != b[0] else "external" if a[zi] != b[zi] else "odd")
    return out


def _coordinates(topology_type: str, shape: list[int], nodes: list[int]) -> dict[str, np.ndarray]:
    import dwave.graphs as dg

    if topology_type == "chimera":
        conv = dg.chimera_coordinates(*shape)
        c = np.array([conv.linear_to_chimera(q) for q in nodes]).reshape(-1, 4)
        return {"row": c[:, 0], "col": c[:, 1], "orientation": c[:, 2], "index": c[:, 3]}
    if topology_type == "pegasus":
        conv = dg.pegasus_coordinates(shape[0])
        c = np.array([conv.linear_to_pegasus(q) for q in nodes]).reshape(-1, 4)
        u, w, k, z = c.T
        return {"row": np.where(u == 0, z, w), "col": np.where(u == 0, w, z), "orientation": u, "index": k}
    conv = dg.zephyr_coordinates(*shape)
    c = np.array([conv.linear_to_zephyr(q) for q in nodes]).reshape(-1, 5)
    u, w, k, j, z = c.T
    return {"row": np.where(u == 0, z, w), "col": np.where(u == 0, w, z), "orientation": u, "index": 2 * k + j}


def qubit_table(device: dict[str, Any]) -> "pd.DataFrame":
    """Coordinates and features of every working qubit of a recorded device, indexed by qubit.

    Columns: ``row``, ``col``, ``orientation``, ``index``, ``distance``, ``degree``, ``x``, ``y``
    (layout position). See the module docstring.

    Raises:
        ValueError: if the device has no topology type (e.g. an imported table without ``--topology``).
    """
    import pandas as pd

    ttype = device.get("topology_type")
    if ttype is None:
        raise ValueError("the device has no topology type; give one (e.g. qasa import --topology)")
    full, shape = topology_graph(ttype, device.get("topology_shape"))
    node_array, edges = _nodes_edges(device)
    nodes = node_array.tolist()
    table = pd.DataFrame(_coordinates(ttype, shape, nodes), index=pd.Index(nodes, name="qubit"))
    pos = positions(device)                      # every qubit of the full topology
    all_xy = np.array(list(pos.values()))
    centre = 0.5 * (all_xy.min(0) + all_xy.max(0))
    radius = np.sqrt(((all_xy - centre) ** 2).sum(1)).max()
    xy = np.array([pos[q] for q in nodes])
    table["x"], table["y"] = xy[:, 0], xy[:, 1]
    table["distance"] = np.sqrt(((xy - centre) ** 2).sum(1)) / radius
    pos_of = np.searchsorted(node_array, edges.ravel())
    table["degree"] = np.bincount(pos_of, minlength=len(nodes)).astype(np.int64) if len(nodes) else []
    return table


def edge_table(device: dict[str, Any]) -> "pd.DataFrame":
    """Working couplers of a recorded device: columns ``u``, ``v``, ``cls`` (coupler class)."""
    import pandas as pd

    _, edges = _nodes_edges(device)
    u, v = edges[:, 0].copy(), edges[:, 1].copy()
    classes = coupler_classes(device["topology_type"], device.get("topology_shape"),
                              list(zip(u.tolist(), v.tolist()))) if len(edges) else []
    return pd.DataFrame({"u": u, "v": v, "cls": classes})


def _nodes_edges(device: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The qubits (sorted) and couplers (``u < v`` pairs, sorted, each once) of :func:`device_graph`.

    A device that lists its qubits and couplers gets them with numpy, without building the graph.
    """
    nodes, edges = device.get("nodelist"), device.get("edgelist")
    if device.get("topology_type") is None or nodes is None or edges is None:
        g = device_graph(device)
        pairs = sorted(tuple(sorted(e)) for e in g.edges)
        return np.array(sorted(g.nodes), dtype=np.int64), np.array(pairs, dtype=np.int64).reshape(-1, 2)
    e = np.sort(np.asarray(edges, dtype=np.int64).reshape(-1, 2), axis=1)
    e = np.unique(e, axis=0) if len(e) else e
    return np.union1d(np.asarray(nodes, dtype=np.int64), e.ravel()), e


def layout_table(device: Mapping[str, Any], qubits: Sequence[int]) -> tuple["pd.DataFrame", list[int]]:
    """Drawing position and topology coordinates per qubit, and the qubits outside the topology.

    Positions are a tile map (:func:`tile_positions`: every unit cell a dense block of squares at its
    place in the cell grid, so a map fills its canvas); a device without topology gets a plain grid.
    Coordinates (``coord`` column, names in ``attrs["coord_names"]``): Chimera ``(i, j, u, k)``,
    Pegasus ``(u, w, k, z)``, Zephyr ``(u, w, k, j, z)``; ``cell`` is the same as text.
    """
    import pandas as pd

    qubits = [int(q) for q in qubits]
    ttype = device.get("topology_type")
    if ttype is None:
        cols = max(int(math.ceil(math.sqrt(max(len(qubits), 1)))), 1)
        order = {q: i for i, q in enumerate(sorted(qubits))}
        df = pd.DataFrame({"x": [float(order[q] % cols) for q in qubits],
                           "y": [-float(order[q] // cols) for q in qubits],
                           "coord": [()] * len(qubits), "cell": ["—"] * len(qubits)},
                          index=pd.Index(qubits, name="qubit"))
        df.attrs["coord_names"] = []
        return df, []
    pos = positions(dict(device, nodelist=None))
    inside = [q for q in qubits if q in pos]
    outside = [q for q in qubits if q not in pos]
    names, coords = _coordinate_tuples(ttype, device.get("topology_shape"), inside)
    xy = tile_positions(ttype, coords)
    df = pd.DataFrame({"x": xy[:, 0] if len(inside) else [], "y": xy[:, 1] if len(inside) else [],
                       "coord": coords,
                       "cell": [f"({', '.join(names)}) = ({', '.join(str(c) for c in t)})" for t in coords]},
                      index=pd.Index(inside, name="qubit"))
    df.attrs["coord_names"] = names
    return df, outside


#: Gap between the blocks of two unit cells in a tile map, in qubit squares.
TILE_GAP = 0.35


def tile_positions(topology_type: str, coords: Sequence[tuple]) -> np.ndarray:
    """Map positions ``(x, y)`` of qubits from their topology coordinates: a dense tile map.

    The device's unit cells sit on their grid (row, column), each drawn as a block of one square per
    qubit, blocks :data:`TILE_GAP` squares apart; within a block, qubits are ordered by orientation
    and index. Every qubit of the chip gets a square of the same size, so a full chip leaves little
    of the canvas white (≈ 17 % on a Pegasus P16, from the absent cells at its edges and the gaps),
    and a qubit's neighbours in its unit cell and the next cells are its neighbours on the map.

    Cells and blocks per topology (coordinates of ``dwave.graphs``):

    - Chimera ``(i, j, u, k)``: cell (i, j); block 2 × 4 (column u, row k).
    - Pegasus ``(u, w, k, z)``: cell (row, column) = (z, w) for u = 0 and (w, z) for u = 1 (the
      cell a qubit's line crosses in its own tile, as :func:`qubit_table`); block 6 × 4
      (column 3u + k // 4, row k % 4).
    - Zephyr ``(u, w, k, j, z)``: cell (2z + j, w) for u = 0 and (w, 2z + j) for u = 1; block
      2 × t (column u, row k).

    Returns:
        An ``(n, 2)`` array (y grows upwards, as D-Wave's layouts).
    """
    c = np.asarray(coords, dtype=np.int64).reshape(len(coords), -1)
    if not len(c):
        return np.zeros((0, 2))
    if topology_type == "chimera":
        i, j, u, k = c.T
        row, col, bcol, brow, bw, bh = i, j, u, k, 2, 4
    elif topology_type == "pegasus":
        u, w, k, z = c.T
        row, col = np.where(u == 0, z, w), np.where(u == 0, w, z)
        bcol, brow, bw, bh = 3 * u + k // 4, k % 4, 6, 4
    else:
        u, w, k, j, z = c.T
        row, col = np.where(u == 0, 2 * z + j, w), np.where(u == 0, w, 2 * z + j)
        bcol, brow, bw, bh = u, k, 2, int(k.max()) + 1
    x = col * (bw + TILE_GAP) + bcol
    y = -(row * (bh + TILE_GAP) + brow)
    return np.column_stack([x, y]).astype(float)


def _coordinate_tuples(ttype: str, shape: Sequence[int] | None, nodes: list[int]) -> tuple[list[str], list[tuple]]:
    import dwave.graphs as dg

    shape = check_shape(ttype, None if shape is None else list(shape))
    if ttype == "chimera":
        conv = dg.chimera_coordinates(*shape)
        return ["i", "j", "u", "k"], [tuple(int(c) for c in conv.linear_to_chimera(q)) for q in nodes]
    if ttype == "pegasus":
        conv = dg.pegasus_coordinates(shape[0])
        return ["u", "w", "k", "z"], [tuple(int(c) for c in conv.linear_to_pegasus(q)) for q in nodes]
    conv = dg.zephyr_coordinates(*shape)
    return ["u", "w", "k", "j", "z"], [tuple(int(c) for c in conv.linear_to_zephyr(q)) for q in nodes]
