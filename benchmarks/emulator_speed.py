"""Virtual QPU speed (issue 4 targets).

1. Freeze-out level: one call of 10 000 reads on every qubit of a Pegasus P16 device
   (count-level path used by the runner), target < 0.5 s; also the full dimod SampleSet path of
   1 000 reads for comparison.
2. Dynamics level: the response of every qubit (5 640 of a fully yielded P16) at 81 h values,
   i.e. 456 840 (qubit, h) pairs × 2 noise components integrated through a 20 µs anneal,
   target < 60 s.

Run: ``python benchmarks/emulator_speed.py``.
"""

import time

import numpy as np

from qasa.virtual import VirtualQPU
from qasa.protocol import h_grid


def main() -> None:
    t0 = time.perf_counter()
    qpu = VirtualQPU(seed=0, broken_nodes=[])
    print(f"construct Advantage-like P16 ({len(qpu.nodelist)} qubits, truth drawn and calibrated): "
          f"{time.perf_counter() - t0:.2f} s")
    h = {q: 0.05 for q in qpu.nodelist}
    qpu.sample_counts(h, num_reads=10, auto_scale=False)        # freeze-out points cached once
    times = []
    for k in range(5):
        t0 = time.perf_counter()
        qpu.sample_counts(h, num_reads=10_000, auto_scale=False, label=f"bench {k}")
        times.append(time.perf_counter() - t0)
    print(f"freeze-out level, count path, 10 000 reads x {len(h)} qubits: best {min(times) * 1e3:.1f} ms, "
          f"median {np.median(times) * 1e3:.1f} ms   (target < 500 ms)")
    t0 = time.perf_counter()
    qpu.sample_ising(h, {}, num_reads=1000, auto_scale=False, answer_mode="raw")
    print(f"freeze-out level, dimod SampleSet path, 1 000 reads: {time.perf_counter() - t0:.2f} s")

    dyn = VirtualQPU(seed=0, broken_nodes=[], physics="dynamics")
    hv = np.array(h_grid(1.0, 0.025))
    truth = dyn.truth
    n = len(truth)
    fields = np.tile(hv, n)
    rep = lambda col: np.repeat(truth[col].to_numpy(), len(hv))  # noqa: E731
    t0 = time.perf_counter()
    p = dyn.dynamics_p_down(fields, rep("b"), rep("rate"), rep("eta"), annealing_time=20.0)
    dt = time.perf_counter() - t0
    print(f"dynamics level, {n} qubits x {len(hv)} h values ({fields.size} pairs x 2 noise values, "
          f"{dyn.dynamics_steps} steps): {dt:.1f} s   (target < 60 s); P(-1) range [{p.min():.3f}, {p.max():.3f}]")


if __name__ == "__main__":
    main()
