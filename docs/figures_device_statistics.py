"""Reproduce the figures of the device-statistics work (issue 10 items 3 and 4), with their seeds.

    PYTHONPATH=. python docs/figures_device_statistics.py            # ~3 min on 2 cores

1. T_eff (:func:`qasa.temperature.effective_temperature`) against D-Wave's
   ``fast_effective_temperature`` on the same sampler: virtual QPU, mock, exact Gibbs (sa) and the
   QASA-model test sampler; the whole-grid pooled fit with its lack of fit.
2. Zero coverage of the corrected correlations over seeded devices with independent true
   parameters; raw versus corrected corr(β, η).
3. Reliability of η: truth, split-half and moment estimates at 4 000, 10⁵ and 10⁶ reads per h.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from dwave.system.temperatures import fast_effective_temperature

import qasa
from qasa import device as dv
from qasa.dataset import Response
from qasa.virtual import VirtualQPU
from qasa.models import get_model
from qasa.protocol import h_grid
from qasa.temperature import effective_temperature

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from qasa_sampler import QASAModelCountSampler  # noqa: E402
from test_temperature import Recorder as _Recorder, _response_of as _counts  # noqa: E402

PAIRS = [("beta", "b"), ("beta", "gamma"), ("beta", "eta"), ("b", "gamma"), ("b", "eta"), ("gamma", "eta")]


def temperatures() -> None:
    print("1. T_eff versus fast_effective_temperature on the same sampler")
    cases = [("virtual QPU advantage4.1 P4 seed 1, ±1 step 0.025, 10 000 reads/h",
              VirtualQPU("advantage4.1", topology_shape=[4], seed=1), qasa.Protocol.grid(1.0, 0.025, reads_per_h=10_000, seed=1), 10_000),
             ("mock P3 β=4, ±0.2 step 0.025, 4 000 reads/h", qasa.get_sampler("mock", topology_shape=[3], beta=4.0),
              qasa.Protocol.grid(0.2, 0.025, reads_per_h=4000, reads_per_call=4000, seed=2), 4000),
             ("sa (exact Gibbs) P3 β=4, same protocol", qasa.get_sampler("sa", topology_shape=[3], beta=4.0),
              qasa.Protocol.grid(0.2, 0.025, reads_per_h=4000, reads_per_call=4000, seed=2), 4000),
             ("QASA-model sampler, 400 qubits, β~U(3,10), ±0.2, 4 000 reads/h", QASAModelCountSampler(400, seed=4),
              qasa.Protocol.grid(0.2, 0.025, reads_per_h=4000, seed=4), 4000)]
    for name, sampler, protocol, reads in cases:
        np.random.seed(11)           # the mock's simulated-annealing substitute seeds itself from numpy
        e = effective_temperature(qasa.run(protocol, sampler))
        rec = _Recorder(sampler)
        fet = [fast_effective_temperature(rec, num_reads=reads, seed=s, sampler_params={"num_reads": reads})[0]
               for s in (0, 1)]
        ses = [effective_temperature(_counts(*rec.log[k]), None).T_eff_stderr for k in range(2)]
        f, fse = float(np.mean(fet)), math.hypot(*ses) / 2
        print(f"  {name}\n    qasa T_eff = {e.T_eff:.5f} ± {e.T_eff_stderr:.5f} (95% {e.T_eff_lo:.5f}–{e.T_eff_hi:.5f}; "
              f"binomial ± {e.naive_stderr / e.beta_eff**2:.5f}, design effect {e.design_effect:.1f}, "
              f"deviance/df {e.deviance_per_df:.2f})\n    fast_effective_temperature = {f:.5f} ± {fse:.5f} "
              f"(seeds 0, 1: {fet[0]:.5f}, {fet[1]:.5f}); z = {(e.T_eff - f) / math.hypot(e.T_eff_stderr, fse):+.2f}")
        if protocol.h_values[-1] >= 1.0:
            w = effective_temperature(qasa.run(protocol, sampler), None)
            print(f"    whole-grid pooled Gibbs fit: T = {w.T_eff:.5f}, deviance/df = {w.deviance_per_df:.0f}")


def _device(seed, n=120, reads=4000):
    rng = np.random.default_rng(seed)
    beta = 5 + 0.1 * rng.normal(size=n)
    theta = np.column_stack([beta, rng.normal(0, 0.01, n), 0.1 * np.exp(0.3 * rng.normal(size=n)),
                             0.1 * np.exp(0.3 * rng.normal(size=n))])
    h = np.array(h_grid(1.0, 0.05))
    nt = np.full((n, len(h)), reads)
    return Response(np.arange(n), h, rng.binomial(nt, get_model("qasa").p_down(h, theta)), nt)


def correlations() -> None:
    print("2. corrected correlations, independent true parameters")
    cov, raw, cor = [], [], []
    for seed in range(60):
        c = dv.corrected_correlations(dv.point_fit(_device(seed)), bootstrap=299, seed=seed).set_index(["a", "b"]).loc[PAIRS]
        cov.append(((c["corrected_lo"] <= 0) & (0 <= c["corrected_hi"])).to_numpy())
        raw.append(c["raw"].to_numpy())
        cor.append(c["corrected"].to_numpy())
    cov, raw, cor = np.array(cov), np.array(raw), np.array(cor)
    print(f"  A. 60 devices × 120 qubits, 41 h × 4 000 reads (own-frame QASA counts); pairs {PAIRS}")
    print(f"     zero coverage per pair {cov.mean(0).round(3)}, overall {cov.mean():.3f}")
    print(f"     corr(β, η): raw mean {raw[:, 2].mean():+.3f} (Fisher interval misses 0 in "
          f"{np.mean(np.abs(raw[:, 2]) > 1.96 / math.sqrt(117)):.0%} of devices); corrected mean {np.nanmean(cor[:, 2]):+.3f}")
    cov = []
    for seed in range(50):
        ds = qasa.run(qasa.Protocol.grid(1.0, 0.05, reads_per_h=4000, seed=seed), QASAModelCountSampler(300, seed=100 + seed))
        c = dv.corrected_correlations(dv.point_fit(ds), bootstrap=499, seed=seed).set_index(["a", "b"]).loc[PAIRS]
        cov.append(((c["corrected_lo"] <= 0) & (0 <= c["corrected_hi"])).to_numpy())
    cov = np.array(cov)
    print("  B. 50 devices × 300 qubits of tests/qasa_sampler.py through qasa.run (default gauges), 41 h × 4 000 reads")
    print(f"     zero coverage per pair {cov.mean(0).round(3)}, overall {cov.mean():.3f}")


def eta_reliability() -> None:
    print("3. reliability of η (βη ≈ 0.1, reference h grid, 300 qubits)")
    for reads in (4000, 100_000, 1_000_000):
        rng = np.random.default_rng(5)
        n = 300
        th = np.column_stack([rng.normal(5, 0.3, n), rng.normal(0, 0.01, n), 0.1 * np.exp(0.3 * rng.normal(size=n)),
                              0.02 * np.exp(0.3 * rng.normal(size=n))])
        h = np.array(h_grid(1.0, 0.025))
        nt = np.full((n, len(h)), reads)
        r = Response(np.arange(n), h, rng.binomial(nt, get_model("qasa").p_down(h, th)), nt)
        f = dv.point_fit(r)
        truth = th[:, 3].var(ddof=1) / f.params["eta"].var(ddof=1)
        s = dv.split_half(r, bootstrap=199, seed=1)["reliability"].loc["eta"]
        m = dv.reliability(f, bootstrap=0).loc["eta", "reliability"]
        print(f"  {reads:>9,} reads/h: truth {truth:.2f}; split-half {s['reliability']:.2f} "
              f"[{s['reliability_lo']:.2f}, {s['reliability_hi']:.2f}]; moments (Wald errors) {m:.2f}")


if __name__ == "__main__":
    temperatures()
    correlations()
    eta_reliability()
