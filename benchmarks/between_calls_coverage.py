"""Coverage of the between-call fit on an independent sampler (issue 20; README "Parameters").

One case per run: ``python benchmarks/between_calls_coverage.py N SEED SIGMA READS_PER_H READS_PER_CALL
[DRIFT_STEP]`` draws N qubits from tests/qasa_sampler.py's :class:`CallNoiseSampler` (a fresh
N(0, SIGMA²) offset of b per call and qubit, optionally a random walk of DRIFT_STEP per call), runs
the default protocol (default gauges) through :func:`qasa.run`, fits it with and without the
between-call component, and prints one JSON line: the coverage of β, b, γ, η (static truth) and
σ_call, of the run-average b, the median σ̂_call, the fraction with ``dispersion_p < 0.01``, the
median interval widths, for the default fit (``new``) and the binomial fit (``old``).

The README table: N = 1000, seeds 51/52/53 for 1 000 (calls of 250) / 10 000 / 100 000 reads per h
(calls of 1 000), σ ∈ {0.005, 0.01, 0.02, 0}; drift: seeds 54/55/56 with steps 0.00086 (10 000),
0.002 (1 000), 0.00027 (100 000) and SIGMA 0.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np

import qasa
from qasa.fitting import fit

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from qasa_sampler import CallNoiseSampler  # noqa: E402


def main() -> None:
    n, seed, sig, rph, rpc = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    drift = float(sys.argv[6]) if len(sys.argv) > 6 else 0.0
    s = CallNoiseSampler(n, seed=seed, sigma_call=sig, drift_step=drift)
    ds = qasa.run(qasa.Protocol(reads_per_h=rph, reads_per_call=rpc, seed=seed + 1), s)
    t0 = time.process_time()
    t = fit(ds, "qasa").table
    out = {"n": n, "seed": seed, "sigma": sig, "rph": rph, "rpc": rpc, "drift": drift,
           "fit_s": round(time.process_time() - t0, 2)}
    old = fit(ds, "qasa", between_calls=False).table
    tr = s.truth.set_index("qubit").loc[t["qubit"]]
    b_avg = tr["b"].to_numpy() + np.mean(s.offsets, axis=0)
    for name, tt in (("new", t), ("old", old)):
        live = (tt["quality"] != "failed").to_numpy()
        d = {}
        for p in ("beta", "b", "gamma", "eta"):
            inside = ((tt[f"{p}_lo"] <= tr[p].to_numpy()) & (tr[p].to_numpy() <= tt[f"{p}_hi"])).to_numpy()
            d[p] = round(float(inside[live].mean()), 4)
            d[p + "_w"] = float(np.median((tt[f"{p}_hi"] - tt[f"{p}_lo"])[live]))
        d["b_runavg"] = round(float(((tt["b_lo"] <= b_avg) & (b_avg <= tt["b_hi"]))[live].mean()), 4)
        d["good"] = float((tt["quality"] == "good").mean())
        d["disp01"] = round(float((tt["dispersion_p"] < 0.01).mean()), 4)
        if name == "new":
            idf = tt["sigma_call_identified"].to_numpy()
            target = sig if drift == 0 else np.nan
            d["ident"] = float(idf.mean())
            d["sigma_cov"] = round(float(((tt["sigma_call_lo"] <= target) & (target <= tt["sigma_call_hi"]))[idf].mean()), 4)
            d["sigma_med"] = float(np.median(tt["sigma_call"][idf]))
        out[name] = d
    print(json.dumps(out))


if __name__ == "__main__":
    main()
