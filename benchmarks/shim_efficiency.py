"""qasa's shim beside D-Wave's ``shim_flux_biases`` on the virtual QPU: rms true residual field against the floor.

Device: the virtual QPU, Advantage_system4.1-like preset on a Pegasus P5 graph (≥ 400 active qubits), drift
off and no noise beyond shots (``ideal=True``; ``flux_drift_compensation`` left on), each qubit's flux→field
conversion ``--spread`` (default ±10 %) off the published one. D-Wave:
``dwave.experimental.shimming.shim_flux_biases`` run unmodified on the zero-field problem of every active
qubit (default hypergradient schedule, ``num_reads=1024`` per step), one run of ``max(budgets)/1024`` steps,
read at 20, 60 and 200 steps (its schedule does not depend on ``num_steps``). qasa: :func:`qasa.shim` at
each budget. For both: the rms over qubits of the true residual field ``b + k_q Φ_q`` (the device's truth),
and the floor ``rms_q 1/(β_q √n)`` for the same ``n`` reads per qubit. ``bound`` is the Cramér–Rao bound of
the device's own response for ``n`` reads at each qubit's crossing (the QASA model's ±η noise and readout
error make each read worth ``(∂P/∂h)²/(P(1 − P)) < β²``): no estimator that is unbiased per qubit gets below it.

Goal at every budget: qasa ≤ 0.75× D-Wave's and ≤ 1.25× the floor; exit status 1 on a miss. Each method's rms
over 447 qubits varies by ±3–5 % from run to run (qasa: sd 0.036 of the floor over 40 shim seeds; D-Wave:
sd 0.07 over 8 runs, device 12), so one run's ratio carries ±6 %: at 20 480 reads 3 of 20 single runs on
devices 11–15 missed 0.75 (0.753–0.783) while each device's expected ratio is 0.67–0.73, and on device 12
even the bound is 0.72× D-Wave's expected residual. ``--repeats R`` (default 4; 1 is one run as before)
runs both R times (qasa with shim seeds ``seed + 1000 i``, D-Wave on a fresh stream of reads: every call of
repeat ``i ≥ 1`` labelled ``dwave repeat i step k``) and judges the goal on the rms pooled over the repeats:
the methods' expected residuals, not one draw of each. About 2 minutes per device with 4 repeats.

Needs ``dwave-experimental`` (``pip install .[bench]``). Run: ``python benchmarks/shim_efficiency.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from typing import Any

import dimod
import numpy as np

from qasa.shim import shim
from qasa.virtual.qpu import VirtualQPU

BUDGETS = (20_480, 61_440, 204_800)
STEP_READS = 1024


class _Labelled:
    """The device with a label on every call, so that a repeat of D-Wave's run gets its own reads (the virtual
    QPU draws a labelled call's reads from its label); ``shim_flux_biases`` reads ``properties`` and ``sample``."""

    def __init__(self, qpu: VirtualQPU, prefix: str) -> None:
        self.qpu, self.prefix, self.calls = qpu, prefix, 0

    @property
    def properties(self) -> dict[str, Any]:
        return self.qpu.properties

    def sample(self, bqm: dimod.BinaryQuadraticModel, **kwargs: Any) -> dimod.SampleSet:
        self.calls += 1
        return self.qpu.sample(bqm, label=f"{self.prefix} step {self.calls}", **kwargs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=11, help="device seed")
    ap.add_argument("--spread", type=float, default=0.10, help="per-qubit conversion spread (uniform ±)")
    ap.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    ap.add_argument("--repeats", type=int, default=4, help="runs of each method, pooled (see the docstring)")
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
    # information per read at the crossing of the device's own response (h ± ε about b = 0: the crossing's place
    # does not change the slope but through γ·h, below 1e-4 here)
    eps = 1e-5
    p = qpu.expected_p_down(np.array([-eps, 0.0, eps]), truth.assign(b=0.0))
    info = ((p[:, 2] - p[:, 0]) / (2 * eps)) ** 2 / (p[:, 1] * (1 - p[:, 1]))

    def rms_residual(flux: list[float]) -> float:
        return float(np.sqrt(np.mean((b + qpu.flux_field(flux).loc[qubits].to_numpy()) ** 2)))

    num = qpu.properties["num_qubits"]
    bqm = dimod.BinaryQuadraticModel.from_ising({q: 0.0 for q in qubits}, {})
    dwave = {n: [] for n in budgets}
    mine = {n: [] for n in budgets}
    rounds, used, seconds = {n: [] for n in budgets}, {n: [] for n in budgets}, {"dwave": 0.0, "qasa": 0.0}
    for i in range(args.repeats):
        t0 = time.time()            # D-Wave: one run, flux history read at each budget
        sampler = device() if i == 0 else _Labelled(device(), f"dwave repeat {i}")
        _, history, _ = shim_flux_biases(bqm, sampler, sampling_params={"num_reads": STEP_READS},
                                         num_steps=max(budgets) // STEP_READS)
        seconds["dwave"] += time.time() - t0
        for n in budgets:
            flux = np.zeros(num)
            for q in qubits:
                flux[q] = history[q][n // STEP_READS]
            dwave[n].append(rms_residual(flux.tolist()))
            t0 = time.time()
            with tempfile.TemporaryDirectory() as tmp:
                res = shim(device(), f"{tmp}/shim", reads_per_qubit=n, seed=args.seed + 1000 * i)
            seconds["qasa"] += time.time() - t0
            mine[n].append(rms_residual(res.flux_biases))
            rounds[n].append(res.rounds)
            used[n].append(res.reads_per_qubit)
    rows = [_row(n, dwave[n], mine[n], beta, info, rounds[n], used[n]) for n in budgets]
    before = float(np.sqrt(np.mean(b ** 2)))
    if args.json:
        print(json.dumps({"seed": args.seed, "qubits": len(qubits), "rms_bias_before": before, "spread": args.spread,
                          "repeats": args.repeats, "seconds": seconds, "rows": rows}, indent=1))
    else:
        _print(args, len(qubits), before, seconds, rows)
    return 0 if all(r["ok"] for r in rows) else 1


def _pooled(values: list[float]) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


def _row(n: int, dwave: list[float], mine: list[float], beta: np.ndarray, info: np.ndarray, rounds: list[int],
         used: list[int]) -> dict[str, Any]:
    floor = float(np.sqrt(np.mean(1.0 / (beta ** 2 * n))))
    bound = float(np.sqrt(np.mean(1.0 / (info * n))))
    d, q = _pooled(dwave), _pooled(mine)
    return {"reads_per_qubit": n, "qasa_reads": max(used), "dwave_rms": d, "qasa_rms": q, "floor": floor,
            "bound": bound, "qasa_over_dwave": q / d, "qasa_over_floor": q / floor, "dwave_over_floor": d / floor,
            "qasa_over_bound": q / bound, "dwave_runs": dwave, "qasa_runs": mine, "qasa_rounds": max(rounds),
            "ok": bool(q <= 0.75 * d and q <= 1.25 * floor and max(used) <= n)}


def _print(args: argparse.Namespace, qubits: int, before: float, seconds: dict[str, float],
           rows: list[dict[str, Any]]) -> None:
    print(f"virtual QPU advantage4.1 P5 seed {args.seed}, {qubits} qubits, conversion spread ±{100 * args.spread:g} %, "
          f"rms bias before {before:.4f}; {args.repeats} run(s) of each method (D-Wave {seconds['dwave']:.0f} s, "
          f"qasa {seconds['qasa']:.0f} s)")
    print(f"{'reads/qubit':>11} {'D-Wave rms':>10} {'qasa rms':>9} {'floor':>7} {'bound':>7} {'qasa/DW':>7} "
          f"{'qasa/floor':>10} {'DW/floor':>8}  ok")
    for r in rows:
        print(f"{r['reads_per_qubit']:>11} {r['dwave_rms']:>10.5f} {r['qasa_rms']:>9.5f} {r['floor']:>7.5f} "
              f"{r['bound']:>7.5f} {r['qasa_over_dwave']:>7.3f} {r['qasa_over_floor']:>10.3f} "
              f"{r['dwave_over_floor']:>8.3f}  {'yes' if r['ok'] else 'MISS'}")


if __name__ == "__main__":
    sys.exit(main())
