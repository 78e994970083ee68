"""qasa's shim beside D-Wave's ``shim_flux_biases`` on the virtual QPU: rms true residual field against the floor.

Device: the virtual QPU, Advantage_system4.1-like preset on a Pegasus P5 graph (≥ 400 active qubits), drift
off (``flux_drift_compensation`` left on), each qubit's flux→field conversion ``--spread`` (default ±10 %)
off the published one. D-Wave: ``dwave.experimental.shimming.shim_flux_biases`` run unmodified on the
zero-field problem of every active qubit (default hypergradient schedule, ``num_reads=1024`` per step), one
run of ``max(budgets)/1024`` steps, read at 20, 60 and 200 steps (its schedule does not depend on
``num_steps``). qasa: :func:`qasa.shim` at each budget. For both: the rms over qubits of the true residual
field ``b + k_q Φ_q`` (the device's truth), and the floor ``rms_q 1/(β_q √n)`` for the same ``n`` reads per
qubit. Goal at every budget: qasa ≤ 0.75× D-Wave's and ≤ 1.25× the floor; exit status 1 on a miss.

Needs ``dwave-experimental`` (``pip install .[bench]``). Run: ``python benchmarks/shim_efficiency.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import dimod
import numpy as np

from qasa.shim import shim
from qasa.virtual.qpu import VirtualQPU

BUDGETS = (20_480, 61_440, 204_800)
STEP_READS = 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=11, help="device seed")
    ap.add_argument("--spread", type=float, default=0.10, help="per-qubit conversion spread (uniform ±)")
    ap.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    try:
        from dwave.experimental.shimming import shim_flux_biases
    except ImportError:
        print("needs dwave-experimental: pip install 'qasa[bench]'", file=sys.stderr)
        return 2

    def device() -> VirtualQPU:
        # ideal: drift and per-call noise off (the setting; 1/f noise and per-call errors are not static)
        return VirtualQPU("advantage4.1", topology_shape=[5], seed=args.seed, flux_gain_spread=args.spread, ideal=True)

    qpu = device()
    qubits = list(qpu.nodelist)
    truth = qpu.truth.loc[qubits]
    beta, b = truth["beta"].to_numpy(), truth["b"].to_numpy()

    def rms_residual(flux: list[float]) -> float:
        return float(np.sqrt(np.mean((b + qpu.flux_field(flux).loc[qubits].to_numpy()) ** 2)))

    def floor(n: int) -> float:
        return float(np.sqrt(np.mean(1.0 / (beta ** 2 * n))))

    # D-Wave: one run, flux history read at each budget
    t0 = time.time()
    bqm = dimod.BinaryQuadraticModel.from_ising({q: 0.0 for q in qubits}, {})
    steps = max(budgets) // STEP_READS
    _, history, _ = shim_flux_biases(bqm, device(), sampling_params={"num_reads": STEP_READS}, num_steps=steps)
    t_dwave = time.time() - t0
    num = qpu.properties["num_qubits"]
    rows = []
    for n in budgets:
        k = n // STEP_READS
        flux = np.zeros(num)
        for q in qubits:
            flux[q] = history[q][k]
        dwave = rms_residual(flux.tolist())
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            res = shim(device(), f"{tmp}/shim", reads_per_qubit=n, seed=args.seed)
        t_qasa = time.time() - t0
        mine = rms_residual(res.flux_biases)
        used = res.reads_per_qubit
        rows.append({"reads_per_qubit": n, "qasa_reads": used, "dwave_rms": dwave, "qasa_rms": mine,
                     "floor": floor(n), "qasa_over_dwave": mine / dwave, "qasa_over_floor": mine / floor(n),
                     "dwave_over_floor": dwave / floor(n), "qasa_rounds": res.rounds, "qasa_seconds": t_qasa,
                     "ok": bool(mine <= 0.75 * dwave and mine <= 1.25 * floor(n) and used <= n)})
    before = float(np.sqrt(np.mean(b ** 2)))
    if args.json:
        print(json.dumps({"qubits": len(qubits), "rms_bias_before": before, "spread": args.spread,
                          "dwave_seconds": t_dwave, "rows": rows}, indent=1))
    else:
        print(f"virtual QPU advantage4.1 P5, {len(qubits)} qubits, conversion spread ±{100 * args.spread:g} %, "
              f"rms bias before {before:.4f}; D-Wave run {t_dwave:.1f} s")
        print(f"{'reads/qubit':>11} {'D-Wave rms':>10} {'qasa rms':>9} {'floor':>7} {'qasa/DW':>7} {'qasa/floor':>10} "
              f"{'DW/floor':>8}  ok")
        for r in rows:
            print(f"{r['reads_per_qubit']:>11} {r['dwave_rms']:>10.5f} {r['qasa_rms']:>9.5f} {r['floor']:>7.5f} "
                  f"{r['qasa_over_dwave']:>7.2f} {r['qasa_over_floor']:>10.2f} {r['dwave_over_floor']:>8.2f}  "
                  f"{'yes' if r['ok'] else 'MISS'}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
