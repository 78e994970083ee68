"""QPU time to a precision target: reference grid vs oracle-optimal design vs qasa's adaptive design.

On the virtual QPU (Advantage_system4.1-like preset, freeze-out level), side by side, each design is
run until the same target — 95 % interval half-widths β 1 % (relative), b 0.003, η 0.01 by default
— holds on 95 % of the qubits (the stopping rule of :mod:`qasa.adaptive`, applied to every design):

- **reference**: the reference grid (±1 step 0.025, the same h on every qubit, a random gauge per
  call), two sweeps of 81 calls at a time, starting at 85 % of its Cramér–Rao prediction at the truth;
- **oracle**: each qubit's minimax-optimal design computed from its *true* parameters
  (:func:`qasa.design.optimal_design`) — the Cramér–Rao limit — starting at 85 % of the predicted
  reads, then in steps of 5 %;
- **adaptive**: :func:`qasa.adaptive.assess_adaptive` (pilot, then rounds planned from the fits).

It prints reads per qubit, calls, QPU access time (the virtual QPU's timing model), the errors
against the truth, the 95 % interval coverage of the targeted parameters, and the ratios
adaptive/oracle (goal ≤ 1.25) and reference/adaptive (expected ≈ 2–4; the README quotes this
ratio). Exit status 1 if adaptive/oracle > 1.5, reference/adaptive < 2 (the README's claim) or the
adaptive design's coverage falls outside 92–98 %. What is judged is QPU access time from the virtual
QPU's timing model (D-Wave's published per-read and programming times), which is what a design
costs on a real QPU; wall and CPU time of the simulation are printed but not judged.

Scale: a Pegasus P6 virtual device, the first ``--qubits`` (default 300) active qubits; drift and
readout error are switched off (``drift_sd=0``, ``readout_error_max=0``) so that every read follows
the QASA model with the published truth, and the truth is what each fit must recover whatever the
design (the virtual QPU's ``estimand`` is defined for a protocol's own calls, not for per-qubit
designs). Usage::

    PYTHONPATH=. python benchmarks/design_efficiency.py [--qubits 120] [--seed 1]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time

import numpy as np
import pandas as pd

import qasa
from qasa import adaptive as A
from qasa import design as D
from qasa.dataset import Dataset
from qasa.protocol import Call, Protocol

PARAMS = ("beta", "b", "gamma", "eta")


def _run_chunks(sampler, protocol, chunks, check):
    """Run lists of calls in memory one after another until ``check(dataset)`` is true."""
    counts, calls = [], []
    for chunk in chunks:
        ds = qasa.run(protocol, sampler, None, calls=chunk)
        counts.append(ds.counts)
        calls.append(ds.calls)
        whole = Dataset(pd.concat(counts, ignore_index=True), pd.concat(calls, ignore_index=True), {})
        if check(whole):
            return whole
    raise RuntimeError("ran out of chunks before the target was met")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--qubits", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--target", default="beta=1%,b=0.003,eta=0.01")
    ap.add_argument("--fraction", type=float, default=0.95)
    ap.add_argument("--reads-per-call", type=int, default=10_000)
    args = ap.parse_args()

    target = D.parse_target(args.target)
    sampler = qasa.get_sampler("emulator", topology_type="pegasus", topology_shape=[6], seed=args.seed,
                               drift_sd=0.0, readout_error_max=0.0)
    qubits = tuple(sorted(sampler.nodelist)[: args.qubits])
    truth = sampler.truth.loc[list(qubits), list(PARAMS)]
    theta = truth.to_numpy(float)
    R = args.reads_per_call
    protocol = A.pilot_protocol(R, qubits=qubits, seed=args.seed)   # qubits, seed and settings of the oracle's calls
    t_sd = D.sd_targets("qasa", target, theta)
    h_range = tuple(sampler.properties["h_range"])
    cand = D.candidate_fields(h_range)
    status_log: dict[str, list] = {}

    def checker(name):
        def check(ds):
            r = ds.response(qubits=qubits)
            st = A.precision_status(A.fit_with_restarts(r, "qasa"), target)
            status_log.setdefault(name, []).append((int(r.n_total.sum(1).max()), st.fraction))
            print(f"  {name:>9}: {int(r.n_total.sum(1).max()):>10} reads/qubit, {st.fraction:.3f} within target",
                  flush=True)
            return st.fraction >= args.fraction
        return check

    results = {}
    # -- reference grid ----------------------------------------------------------------------
    t0 = time.time()
    grid = np.array(qasa.h_grid(1.0, 0.025))
    need_ref = D.required_reads("qasa", theta, grid, np.ones(len(grid)), t_sd)
    sweeps0 = max(1, int(0.85 * np.quantile(need_ref, args.fraction) / (len(grid) * R)))
    ref = Protocol.grid(1.0, 0.025, reads_per_h=R * 400, reads_per_call=R, qubits=qubits, seed=args.seed)
    ref_calls = ref.calls()
    k = len(grid)

    def ref_chunks():
        def sweep(g):
            return [Call(f"g{c.gauge:04d}-c{c.h_index:05d}", c.index, c.h_index, c.h, c.gauge, c.num_reads, c.flips)
                    for c in ref_calls[g * k:(g + 1) * k]]
        yield [c for g in range(sweeps0) for c in sweep(g)]
        for g in range(sweeps0, 400, 2):     # checked every 2 sweeps (≈ 3 % of its reads)
            yield sweep(g) + sweep(g + 1)

    results["reference"] = (_run_chunks(sampler, ref, ref_chunks(), checker("reference")), time.time() - t0)

    # -- oracle: optimal design at the truth ---------------------------------------------------
    t0 = time.time()
    w = D.optimal_design("qasa", theta, cand, t_sd)
    need = D.required_reads("qasa", theta, cand, w, t_sd)
    first = max(1, int(math.ceil(0.85 * np.quantile(need, args.fraction) / R)))
    step = max(1, int(math.ceil(0.05 * np.quantile(need, args.fraction) / R)))

    def oracle_chunks():
        size, rnd = first, 1
        while rnd < 200:
            fields, counts = D.allocate(cand, w, size)
            keep = counts > 0
            plan = {"calls": size, "reads_per_call": R, "qubits": list(qubits),
                    "fields": [list(f[m]) for f, m in zip(fields, keep)],
                    "counts": [list(c[m]) for c, m in zip(counts, keep)]}
            yield A.round_calls(plan, protocol, rnd)
            size, rnd = step, rnd + 1

    results["oracle"] = (_run_chunks(sampler, protocol, oracle_chunks(), checker("oracle")), time.time() - t0)

    # -- adaptive --------------------------------------------------------------------------------
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        pilot = protocol

        def on_round(rnd, info):
            status_log.setdefault("adaptive", []).append((int(info["reads_per_qubit"]), info["fraction_met"]))
            print(f"  {'adaptive':>9}: {int(info['reads_per_qubit']):>10} reads/qubit, "
                  f"{info['fraction_met']:.3f} within target (round {rnd})", flush=True)

        ds = A.assess_adaptive(sampler, tmp, target, protocol=pilot, fraction=args.fraction, on_round=on_round)
        results["adaptive"] = (ds, time.time() - t0)

    # -- summary ---------------------------------------------------------------------------------------
    rows = []
    z = D.z_value(0.95)
    for name, (ds, wall) in results.items():
        r = ds.response(qubits=qubits)
        f = A.fit_with_restarts(r, "qasa").table.set_index("qubit").loc[list(qubits)]
        st = A.precision_status(A.fit_with_restarts(r, "qasa"), target)
        row = {"design": name, "reads/qubit": int(r.n_total.sum(1).max()), "calls": len(ds.calls),
               "qpu_s": float(np.nansum(ds.calls["qpu_access_time"].to_numpy(float))) / 1e6,
               "within": st.fraction, "wall_s": wall}
        covered = []
        for p in PARAMS:
            err = f[p].to_numpy(float) - truth[p].to_numpy(float)
            row[f"{p}_mean_err"] = float(np.nanmean(err))
            row[f"{p}_mean_err_se"] = float(np.nanstd(err, ddof=1) / np.sqrt(np.isfinite(err).sum()))
            if p in target:
                if f"{p}_lo" in f:
                    lo, hi = f[f"{p}_lo"].to_numpy(float), f[f"{p}_hi"].to_numpy(float)
                else:
                    se = f[f"{p}_stderr"].to_numpy(float)
                    lo, hi = f[p].to_numpy(float) - z * se, f[p].to_numpy(float) + z * se
                inside = (truth[p].to_numpy(float) >= lo) & (truth[p].to_numpy(float) <= hi)
                row[f"{p}_coverage"] = float(inside.mean())
                covered.append(inside)
        row["coverage"] = float(np.concatenate(covered).mean())
        rows.append(row)
    table = pd.DataFrame(rows).set_index("design")
    pd.set_option("display.width", 200)
    print()
    print(f"virtual QPU Advantage_system4.1-like (Pegasus P6, seed {args.seed}), {len(qubits)} qubits, "
          f"target {args.target} on {args.fraction:.0%} of qubits, {R} reads per call")
    print(table[["reads/qubit", "calls", "qpu_s", "within", "coverage", "wall_s"]].to_string(float_format=lambda v: f"{v:.4g}"))
    print("\nmean error against the truth (± standard error of the mean), coverage of 95 % intervals:")
    for name, row in table.iterrows():
        parts = [f"{p} {row[f'{p}_mean_err']:+.2e} ± {row[f'{p}_mean_err_se']:.1e}" for p in PARAMS]
        cov = [f"{p} {row[f'{p}_coverage']:.3f}" for p in PARAMS if f"{p}_coverage" in row and not pd.isna(row[f"{p}_coverage"])]
        print(f"  {name:>9}: " + "; ".join(parts) + "   coverage: " + ", ".join(cov))
    ada_orc = table.loc["adaptive", "qpu_s"] / table.loc["oracle", "qpu_s"]
    ref_ada = table.loc["reference", "qpu_s"] / table.loc["adaptive", "qpu_s"]
    ref_orc = table.loc["reference", "qpu_s"] / table.loc["oracle", "qpu_s"]
    print(f"\nQPU time ratios: adaptive/oracle = {ada_orc:.3f} (goal ≤ 1.25, fail > 1.5); "
          f"reference/adaptive = {ref_ada:.2f} (expected ≈ 2–4); reference/oracle = {ref_orc:.2f}")
    cov = table.loc["adaptive", "coverage"]
    ok = ada_orc <= 1.5 and ref_ada >= 2.0 and 0.92 <= cov <= 0.98
    print(f"adaptive coverage {cov:.3f} (must lie in 0.92–0.98), reference/adaptive {ref_ada:.2f} (must be ≥ 2), "
          f"adaptive/oracle {ada_orc:.3f} (must be ≤ 1.5): {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
