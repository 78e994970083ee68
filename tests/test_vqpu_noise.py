"""The virtual QPU's noise beyond shots (issue 20 item 1): per-programming errors, 1/f flux noise on the
device's clock, DAC quantization, h scale; ideal=True is the device of qasa 9f8ad1f bit for bit."""

import numpy as np
import pytest
from scipy import signal

import qasa
from qasa.virtual import PRESETS, VirtualQPU
from qasa.virtual import noise as qnoise
from qasa.virtual.qpu import CallKey


def _h(qpu):
    return {x: 0.05 * ((i % 7) - 3) for i, x in enumerate(qpu.nodelist)}


def test_ideal_gives_the_counts_of_9f8ad1f_bit_for_bit():
    """Counts pinned from main 9f8ad1f (before the noise existed) for the same labelled calls."""
    q = VirtualQPU(seed=11, topology_shape=[2], ideal=True)
    kw = dict(num_reads=1000, auto_scale=False)
    _, a, info = q.sample_counts(_h(q), flux_drift_compensation=True, label="qasa g0000-h00003", **kw)
    _, b, _ = q.sample_counts(_h(q), flux_drift_compensation=False, label="qasa g0002-h00007", **kw)
    ss = q.sample_ising({x: 0.1 for x in q.nodelist[:5]}, {}, num_reads=200, auto_scale=False, answer_mode="raw",
                        label="qasa g0001-h00000")
    assert a[:8].tolist() == [151, 266, 356, 515, 640, 753, 814, 193] and int(a.sum()) == 19450
    assert b[:8].tolist() == [159, 263, 366, 495, 633, 762, 810, 228] and int(b.sum()) == 19414   # drift walk on
    assert (ss.record.sample == -1).sum(0).tolist() == [147, 142, 144, 150, 141]
    assert info["problem_id"] == "3a3d8a2d-7921-fe94-2154-4fe39a244bc7"
    noisy = VirtualQPU(seed=11, topology_shape=[2])
    assert not np.array_equal(a, noisy.sample_counts(_h(q), flux_drift_compensation=True,
                                                     label="qasa g0000-h00003", **kw)[1])


def test_per_call_offsets_have_the_published_spread_and_show_in_the_counts():
    """Per-programming error only: the call offsets are N(0, σ(s*)²) per qubit, and counts of calls at
    equal programmed h vary by more than binomial by exactly n(n−1)·Var_δ[p(δ)]."""
    q = VirtualQPU(seed=2, topology_shape=[2], broken_nodes=[], ideal=True, ice_scale=1.0)
    idx = np.arange(len(q.nodelist))
    s_star = q.truth["freezeout_s"].to_numpy()
    sd = qnoise.ice_sd(s_star)
    assert sd.mean() == pytest.approx(0.025 + (0.612 - 0.28) / 0.47 * -0.015, abs=1e-3)   # D-Wave's σ(s) at s*
    calls, n = 300, 1000
    z = np.array([q.call_noise(idx, CallKey.parse(f"qasa g{k:04d}-h00000 seed 5"), {}, 1e5)[0] for k in range(calls)])
    assert np.std(z / sd) == pytest.approx(1.0, abs=0.03) and abs(np.mean(z / sd)) < 0.03
    counts = np.array([q.sample_counts({x: 0.0 for x in q.nodelist}, num_reads=n, auto_scale=False,
                                       label=f"qasa g{k:04d}-h00000 seed 5")[1] for k in range(calls)])
    x, w = np.polynomial.hermite.hermgauss(40)
    p = np.array([q._p_down(idx, np.zeros(len(idx)), np.sqrt(2) * xk * sd, {}) for xk in x])     # (nodes, qubits)
    w = w / np.sqrt(np.pi)
    mean_p = w @ p
    var_p = w @ (p - mean_p) ** 2
    binomial = n * mean_p * (1 - mean_p)
    predicted_excess = n * (n - 1) * var_p
    observed_excess = counts.var(0, ddof=1) - binomial
    ratio = observed_excess.sum() / predicted_excess.sum()
    assert ratio == pytest.approx(1.0, abs=0.1)
    assert predicted_excess.sum() > 2 * binomial.sum()            # far beyond what binomial noise allows


def test_all_sources_on_the_between_call_variance_of_counts_is_the_predicted_one():
    """The default device (every source on, drift compensation on), 300 back-to-back calls at h = 0:
    the counts' excess over binomial variance is n(n−1)·Var_δ[p(δ)] with δ ~ N(0, σ_ice² + the 1/f
    variance between calls, ∫ S(f) sinc²(πfT)[1 − sinc²(πf·300T)] df), within-call noise in p."""
    q = VirtualQPU(seed=6, topology_shape=[2], broken_nodes=[])
    idx = np.arange(len(q.nodelist))
    calls, n = 300, 1000
    h = {x: 0.0 for x in q.nodelist}
    out = [q.sample_counts(h, num_reads=n, auto_scale=False, label=f"qasa g{k:04d}-h00000 seed 5 call {k}")
           for k in range(calls)]
    counts = np.array([o[1] for o in out])
    T = out[0][2]["timing"]["qpu_access_time"] * 1e-6
    s_star = q.truth["freezeout_s"].to_numpy()
    var = qnoise.ice_sd(s_star) ** 2 + q._h_per_uphi0(s_star) ** 2 * q.flux_noise_model.between_variance(
        T, calls * T, 1e6 / 20.0, True)
    within = q.call_noise(idx, CallKey.parse("qasa g0000-h00000 seed 5 call 0"), {}, T * 1e6)[1]
    x, w = np.polynomial.hermite.hermgauss(40)
    p = np.array([q._p_down(idx, np.zeros(len(idx)), np.sqrt(2 * var) * xk, {}, within=within) for xk in x])
    w = w / np.sqrt(np.pi)
    mean_p = w @ p
    predicted_excess = n * (n - 1) * (w @ (p - mean_p) ** 2)
    observed_excess = counts.var(0, ddof=1) - n * mean_p * (1 - mean_p)
    assert observed_excess.sum() / predicted_excess.sum() == pytest.approx(1.0, abs=0.15)
    assert np.mean(var / qnoise.ice_sd(s_star) ** 2) > 1.15            # 1/f adds ~20 % to the ICE variance


@pytest.mark.slow   # 5 s: 4 096 calls
def test_flux_noise_spectrum_of_the_call_offsets_recovers_amplitude_and_exponent():
    """4096 back-to-back calls of 0.1 s: the Welch spectrum of the per-call offsets (converted back to
    flux with D-Wave's conversion) follows A²/f^α · sinc²(πfT) with the planted A = 2 µΦ₀/√Hz, α = 0.9."""
    q = VirtualQPU(seed=3, topology_shape=[2], broken_nodes=[], ideal=True, flux_noise=2.0, drift_sd=0.0)
    idx = np.arange(len(q.nodelist))
    T, M = 0.1, 4096
    kw = {"flux_drift_compensation": False}
    off = np.array([q.call_noise(idx, CallKey.parse(f"qasa g0000-h00000 seed 1 call {k}"), kw, T * 1e6)[0]
                    for k in range(M)])
    phi = off / q._h_per_uphi0(q.truth["freezeout_s"].to_numpy())           # µΦ₀
    f, P = signal.welch(phi, fs=1 / T, nperseg=1024, axis=0)
    P = P.mean(1) / np.sinc(f * T) ** 2
    edges = np.geomspace(8 / (1024 * T), 0.2 / T, 9)         # average in log bands, then take logs
    fb = np.array([np.exp(np.log(f[(f >= lo) & (f < hi)]).mean()) for lo, hi in zip(edges[:-1], edges[1:])])
    Pb = np.array([P[(f >= lo) & (f < hi)].mean() for lo, hi in zip(edges[:-1], edges[1:])])
    slope, icpt = np.polyfit(np.log10(fb), np.log10(Pb), 1)
    assert -slope == pytest.approx(PRESETS["advantage4.1"].flux_noise_alpha, abs=0.08)
    assert np.sqrt(10 ** icpt) == pytest.approx(2.0, rel=0.15)
    # drift compensation flattens the spectrum below 1 mHz: the slowest calls' offsets move less
    comp = np.array([q.call_noise(idx, CallKey.parse(f"qasa g0000-h00000 seed 1 call {k}"),
                                  {"flux_drift_compensation": True}, 1e9)[0] for k in range(200)])    # 1000 s calls
    assert np.var(comp) < 0.5 * np.var(np.array([q.call_noise(idx, CallKey.parse(f"qasa g0000-h00000 seed 1 call {k}"),
                                                              kw, 1e9)[0] for k in range(200)]))


def test_dac_quantization_closed_form():
    """Errors within ±q(h) = q₀e^{−κ|h|} (0.008 at 0, 0.0005 at 2), uniform at h ≈ 0 (sd q₀/√3), the
    same value realized twice; and the device's counts at programmed h are its counts at Q(h) without DAC."""
    rng = np.random.default_rng(0)
    phase = rng.random(20_000)
    for h0 in (0.0, 0.5, 2.0):
        h = h0 + 1e-4 * rng.standard_normal(phase.size)
        err = qnoise.quantize(h, phase, 0.008, 0.0005) - h
        bound = qnoise.dac_half_step(h, 0.008, 0.0005)
        assert np.all(np.abs(err) <= bound * 1.02)
        assert np.std(err) == pytest.approx(bound.mean() / np.sqrt(3), rel=0.03)
    assert qnoise.dac_half_step(np.array([0.0, 2.0]), 0.008, 0.0005) == pytest.approx([0.008, 0.0005])
    once = qnoise.quantize(h, phase, 0.008, 0.0005)
    assert np.allclose(qnoise.quantize(once, phase, 0.008, 0.0005), once, atol=1e-12)
    on = VirtualQPU(seed=4, topology_shape=[2], broken_nodes=[], ideal=True, dac_q0=0.008, teff=None)   # same β
    off = VirtualQPU(seed=4, topology_shape=[2], broken_nodes=[], ideal=True, teff=None)
    h = _h(on)
    hq = qnoise.quantize(np.array(list(h.values())), on.truth["dac_phase"].to_numpy(), 0.008, 0.0005)
    kw = dict(num_reads=5000, auto_scale=False, label="qasa g0000-h00001 seed 3")
    assert np.array_equal(on.sample_counts(h, **kw)[1], off.sample_counts(dict(zip(h, hq)), **kw)[1])
    assert not np.array_equal(on.sample_counts(h, **kw)[1], off.sample_counts(h, **kw)[1])


def test_h_scale_spread_is_one_percent_and_scales_the_field():
    q = VirtualQPU(seed=5)
    assert q.truth["h_scale"].std() == pytest.approx(0.01, rel=0.05) and q.truth["h_scale"].mean() == pytest.approx(1, abs=1e-3)
    assert (VirtualQPU(seed=5, topology_shape=[2], ideal=True).truth["h_scale"] == 1.0).all()


def test_published_teff_with_the_noise_on():
    """Advantage_system4.1 with every noise source on: dwave-system's T_eff is the published 0.198 to
    0.6 % (the calibration without the noise would give ≈ 1.2 % more)."""
    from dwave.system.temperatures import fast_effective_temperature

    qpu = VirtualQPU("advantage4.1", seed=3)
    assert qpu.preset.ice_scale and qpu.preset.flux_noise and qpu.preset.dac_q0 and qpu.preset.gain_sd
    t_eff, _ = fast_effective_temperature(qpu, num_reads=1000, seed=4, sampler_params={"num_reads": 1000})
    assert t_eff == pytest.approx(0.198, rel=0.006)
    assert qpu.b_scale / VirtualQPU("advantage4.1", seed=3, ideal=True).b_scale > 1.008     # the noise was accounted for


def test_run_seed_reaches_the_device_and_resumes_identically():
    """Two run seeds, gauges off: different counts (they were identical at 9f8ad1f); the same run seed
    on a fresh device: identical counts, whatever ran before on it."""
    qpu = VirtualQPU(seed=8, topology_shape=[2], broken_nodes=[])
    proto = qasa.Protocol.grid(0.5, 0.25, reads_per_h=200, spin_reversal=False)
    one = qasa.run(proto.replace(seed=1), qpu).counts
    two = qasa.run(proto.replace(seed=2), qpu).counts
    again = qasa.run(proto.replace(seed=1), VirtualQPU(seed=8, topology_shape=[2], broken_nodes=[])).counts
    assert one.equals(again) and not one["n_down"].equals(two["n_down"])
    ideal = VirtualQPU(seed=8, topology_shape=[2], broken_nodes=[], ideal=True)
    assert not qasa.run(proto.replace(seed=1), ideal).counts["n_down"].equals(qasa.run(proto.replace(seed=2), ideal).counts["n_down"])


def test_label_forms_share_a_calls_noise():
    """The runner's and the Leap path's label of the same call give the same offsets (the call id and
    run seed are parsed, not hashed); another run seed gives others."""
    q = VirtualQPU(seed=1, topology_shape=[2], broken_nodes=[])
    idx = np.arange(len(q.nodelist))
    a = q.call_noise(idx, CallKey.parse("qasa g0003-h00017 seed 42 call 260"), {}, 2e5)[0]
    b = q.call_noise(idx, CallKey.parse("qasa g0003-h00017 seed 42"), {}, 2e5)[0]      # position 3·81 + 17 = 260
    c = q.call_noise(idx, CallKey.parse("qasa g0003-h00017 seed 43 call 260"), {}, 2e5)[0]
    assert np.array_equal(a, b) and not np.allclose(a, c)
    assert CallKey.parse("qasa g0003-h00017 seed 42").position == 260


def test_estimand_records_sigma_call_and_the_run_average_offset():
    q = VirtualQPU(seed=4, topology_shape=[2], broken_nodes=[])
    pr = qasa.Protocol.grid(1.0, 0.025, reads_per_h=4000, reads_per_call=1000, seed=3).resolved(q.nodelist)
    truth = __import__("pandas").DataFrame(q.qasa_truth(pr)).set_index("qubit")
    assert truth["estimand_sigma_call"].median() == pytest.approx(truth["sigma_call"].median(), rel=0.1)
    assert 0.01 < truth["sigma_call"].median() < 0.03
    ideal = VirtualQPU(seed=4, topology_shape=[2], broken_nodes=[], ideal=True, drift_sd=0.0)
    assert (ideal.estimand(pr)["sigma_call"] == 0).all()


@pytest.mark.slow
def test_a_random_effects_fit_recovers_the_estimand():
    """The estimand is what a fit that knows calls are programmings recovers: a per-qubit random-effects
    QASA likelihood (each call's offset δ ~ N(0, σ²) integrated out, 15-node Gauss–Hermite; scipy,
    independent of qasa.fitting) on a noisy run lands on estimand β, η, σ_call and on b = static b +
    run-average drift, not on the static b (measured: σ̂/σ* 1.04, β̂/β* − 1 = −0.2 %, RMS b̂ − b* 0.0011
    against 0.0048 from the static b, 30 qubits)."""
    import pandas as pd
    from scipy.optimize import minimize

    from qasa.models import MODELS

    model = MODELS["qasa"]
    z, w = np.polynomial.hermite.hermgauss(15)
    z, lw = np.sqrt(2) * z, np.log(w / np.sqrt(np.pi))

    def nll(par, x, k, n):
        beta, b, gamma, eta, sig = par
        p = np.clip(model.p_down(x, np.array([[beta, b + sig * zi, gamma, eta] for zi in z])), 1e-12, 1 - 1e-12)
        ll = k * np.log(p) + (n - k) * np.log1p(-p) + lw[:, None]
        m = ll.max(0)
        return -np.sum(m + np.log(np.exp(ll - m).sum(0)))

    # (the h DAC off: its per-field error is a term of its own, qasa.fitting "Per-field errors", which this
    # per-call-only likelihood does not have; the estimand leaves the rounding out)
    qpu = VirtualQPU(seed=5, topology_shape=[4], broken_nodes=[], dac_q0=0.0)
    ds = qasa.run(qasa.Protocol.grid(1.0, 0.025, reads_per_h=10_000, reads_per_call=1000, seed=1), qpu)
    truth = pd.DataFrame(ds.device["truth"]).set_index("qubit")
    rows = []
    for q in truth.index[:30]:
        d = ds.counts[ds.counts.qubit == q]
        g = d.gauge.to_numpy()
        k = np.where(g == 1, d.n_down, d.n_up).astype(float)          # the programmed (physical) frame
        t = truth.loc[q]
        start = [t.estimand_beta * 1.02, t.estimand_b, t.estimand_gamma, 0.02, 0.01]
        r = minimize(nll, start, args=(g * d.h.to_numpy(), k, (d.n_down + d.n_up).to_numpy(float)),
                     method="L-BFGS-B", bounds=[(0.5, 50), (-0.5, 0.5), (0, 2), (0, 0.5), (0, 0.2)])
        rows.append(r.x)
    fits = pd.DataFrame(rows, columns=["beta", "b", "gamma", "eta", "sigma"], index=truth.index[:30])
    t = truth.loc[fits.index]
    assert np.median(fits.sigma / t.estimand_sigma_call) == pytest.approx(1.0, abs=0.1)
    assert np.median(fits.beta / t.estimand_beta - 1) == pytest.approx(0.0, abs=0.01)
    d = (fits.eta - t.estimand_eta).to_numpy()       # η is weakly identified beside σ_call (several on η = 0):
    assert abs(d.mean()) < 3 * d.std(ddof=1) / np.sqrt(len(d))     # unbiased within 3 standard errors
    to_estimand = np.sqrt(np.mean((fits.b - t.estimand_b) ** 2))
    assert to_estimand < 0.4 * np.sqrt(np.mean((fits.b - t.b) ** 2)) and to_estimand < 0.002


def test_the_runners_labels_name_the_calls_the_estimand_computes():
    """Every label the runner sends parses to the key the estimand uses for that call (same run seed,
    call id and position), so the truth recorded with a dataset is computed from the reads' own draws."""
    qpu = VirtualQPU(seed=2, topology_shape=[2], broken_nodes=[])
    labels = []
    real = qpu.sample_counts

    def spy(h, **kw):
        labels.append(kw["label"])
        return real(h, **kw)

    qpu.sample_counts = spy
    proto = qasa.Protocol.grid(0.5, 0.25, reads_per_h=400, reads_per_call=200, seed=7)
    qasa.run(proto, qpu)
    calls = {c.call_id: c for c in proto.resolved(qpu.nodelist).calls()}
    assert len(labels) == len(calls)
    for label in labels:
        key = CallKey.parse(label)
        call = calls[f"g{key.gauge:04d}-h{key.h_index:05d}"]
        assert (key.run_seed, key.index, key.position) == (7, call.slot, call.slot)
        assert key.stream == CallKey.of(7, call).stream
    # the calls go out in run order (each gauge pass shuffled), the order the device's clock records
    assert [CallKey.parse(label).position for label in labels] == list(range(len(labels)))
    assert [CallKey.parse(label).h_index for label in labels[:5]] != [0, 1, 2, 3, 4]
