"""The CLI end to end (click's CliRunner: the real commands, in-process)."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from qasa.cli import main

SMALL = ["--topology", "chimera", "--shape", "2,2,4", "--h-step", "0.1", "--reads", "1000", "--seed", "1"]


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_assess_on_the_mock_backend_writes_dataset_fits_and_report(tmp_path):
    out = tmp_path / "run"
    res = invoke("assess", out, "--backend", "mock", "--beta", "4", *SMALL, "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["device"]["solver"] == "MockDWaveSampler"
    assert summary["data"]["qubits"] == 32 and summary["data"]["h_values"] == 21
    assert summary["pooled_gibbs"]["beta"] == pytest.approx(4.0, rel=0.03)
    for f in ("metadata.json", "counts.parquet", "fits/qasa.parquet", "fits/model_parameters.csv",
              "report/index.html", "report/summary.json"):
        assert (out / f).is_file(), f
    html = (out / "report" / "index.html").read_text()
    # response curves, histograms, correlation matrices, correlogram, noise beyond shots, the analogue's
    # temperature profile (SVG); identical simulated qubits leave no parameter identified well enough to
    # map (reliability rule), and the report says so
    assert html.count("data:image/svg+xml;base64,") == 6 and html.count('class="qmap"') == 0
    assert "Noise beyond shots" in html
    assert "Which parameters the data identify" in html
    assert "Spatial structure" in html and (out / "report" / "spatial.csv").is_file()


def test_default_assess_runs_on_the_virtual_qpu_and_reports_recovery(tmp_path):
    out = tmp_path / "run"
    res = invoke("assess", out, "--shape", "3", "--h-step", "0.05", "--reads", "20000", "--no-gauges",
                 "--device-seed", "4", "--json", "--quiet")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    assert summary["device"]["solver"] == "Advantage_system4.1-like"
    rec = summary["recovery"]
    assert set(rec) == {"beta", "b", "gamma", "eta"}           # no gauges: every parameter has a truth
    assert rec["b"]["median_abs_error"] < 0.005 and rec["beta"]["median_abs_error"] < 0.1
    assert "Recovered versus true parameters" in (out / "report" / "index.html").read_text()
    # the h DAC's per-field error is estimated for the device (between its uniform-rounding sd at h = 0.5
    # and at h = 0) and held in the likelihood: no qubit fails the goodness-of-fit test for it
    sf = summary["noise_beyond_shots"]["sigma_field"]
    assert 0.0023 < sf["sigma_field"] < 0.0046 and sf["sigma_field_lo"] > 0, sf
    assert summary["fit"]["quality"].get("bad", 0) <= 0.02 * summary["data"]["qubits"], summary["fit"]["quality"]


def test_run_fit_compare_report_and_text_output(tmp_path):
    out = tmp_path / "run"
    res = invoke("run", out, "--backend", "sa", *SMALL, "--quiet")
    assert res.exit_code == 0 and "32 qubits" in res.output
    res = invoke("fit", out, "--model", "gibbs", "--compare")
    assert res.exit_code == 0, res.output
    assert "model gibbs: 32 qubits" in res.output and "preferred:" in res.output
    for m in ("gibbs", "gibbs-bias", "gaussian-noise", "qasa"):
        assert (out / "fits" / f"{m}.parquet").is_file()
    res = invoke("report", out, "--model", "gibbs", "--json")
    assert json.loads(res.output)["fit"]["model"] == "gibbs"


def test_import_and_export_spin_table(tmp_path):
    # two antithetic gauges per h: every qubit has equal reads at each programmed field, so the
    # export is in the programmed frame (as the reference scripts' data) and round-trips exactly
    out = tmp_path / "run"
    invoke("run", out, "--backend", "sa", *SMALL[:-4], "--reads", "2000", *SMALL[-2:], "--quiet")
    assert invoke("export", out, tmp_path / "spin_table.csv").exit_code == 0
    res = invoke("import", tmp_path / "spin_table.csv", tmp_path / "imported", "--topology", "chimera", "--shape", "2,2,4")
    assert res.exit_code == 0, res.output
    res = invoke("fit", tmp_path / "imported", "--model", "gibbs", "--json")
    a = pd.read_parquet(tmp_path / "imported" / "fits" / "gibbs.parquet")
    invoke("fit", out, "--model", "gibbs")
    b = pd.read_parquet(out / "fits" / "gibbs.parquet")
    assert np.allclose(a["beta"], b["beta"], rtol=1e-12)


def test_info_json():
    res = invoke("info", "--backend", "sa", "--topology", "zephyr", "--shape", "1,4", "--json")
    data = json.loads(res.output)
    assert data["num_qubits"] == 48 and data["topology_type"] == "zephyr" and "nodelist" not in data


@pytest.mark.parametrize("args, message", [
    (["--backend", "nope"], "error: Invalid value for '--backend': 'nope' is not one of"),
    (["--h-max", "5", "--h-step", "0.5"], "error: h=-5 is outside the sampler's h_range [-4, 4]"),
    (["--reads-per-call", "20000", "--reads", "20000"], "error: num_reads per call=20000 is outside"),
    (["--qubits", "0,99999"], "error: qubit 99999 is not an active qubit"),
    (["--anneal-schedule", "0,0;0.1,1"], "maximum slope"),
])
def test_bad_input_exits_1_with_one_line(tmp_path, args, message):
    res = CliRunner().invoke(main, ["run", str(tmp_path / "x"), "--topology", "chimera", "--shape", "2,2,4",
                                    "--backend", "mock", *args])
    assert res.exit_code == 1
    assert message in res.output and len(res.output.strip().splitlines()) == 1


def test_qpu_without_token_exits_1(monkeypatch):
    from dwave.cloud.testing import isolated_environ

    with isolated_environ(remove_dwave=True):
        res = CliRunner().invoke(main, ["info", "--backend", "qpu"])
    assert res.exit_code == 1 and "no Leap API token" in res.output


def test_different_protocol_in_existing_directory(tmp_path):
    out = tmp_path / "run"
    invoke("run", out, "--backend", "sa", *SMALL, "--quiet")
    before = (out / "counts.parquet").read_bytes()
    res = CliRunner().invoke(main, ["run", str(out), "--backend", "sa", *SMALL[:-2], "--seed", "2", "--quiet"])
    assert res.exit_code == 1 and "different protocol (seed: stored 1, requested 2)" in res.output
    assert (out / "counts.parquet").read_bytes() == before


def test_kept_raw_reads_give_an_outcome_correlation_section(tmp_path):
    out = tmp_path / "raw"
    res = invoke("run", out, "--backend", "sa", "--topology", "chimera", "--shape", "2,2,4", "--h-step", "0.5",
                 "--reads", "2000", "--keep-samples", "1000", "--seed", "3", "--quiet")
    assert res.exit_code == 0, res.output
    assert len(list((out / "samples").glob("*.npy"))) == 10
    summary = json.loads(invoke("report", out, "--model", "gibbs", "--json").output)
    oc = summary["outcome_correlations"]
    assert oc["h"] == 0.0 and oc["reads"] == 2000 and abs(oc["z_all"]) < 4
    assert "Outcome correlations within reads" in (out / "report" / "index.html").read_text()


@pytest.mark.slow
def test_analogues_command_writes_the_side_by_side_report(tmp_path):
    res = invoke("analogues", "--out", tmp_path / "ana", "--steps", "300", "--sweeps", "32", "--json")
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)["combined"]
    assert len(rows) == 12 and (tmp_path / "ana" / "analogues.html").is_file()
    cosine = next(r for r in rows if r["shape"] == "cosine")
    assert cosine["qpu_beta"] > 0 and cosine["sa_ground_state_probability"] > 0


def test_report_refits_when_the_dataset_grew(tmp_path):
    """A fit saved before a resumed run finished is stale: report fits again."""
    from qasa.fitting import FitTable

    out = tmp_path / "grow"
    invoke("run", out, "--backend", "sa", *SMALL, "--quiet")
    invoke("fit", out, "--model", "gibbs")
    stale = FitTable.load(out / "fits" / "gibbs.parquet")
    stale.table["beta"] = 123.0                 # an edited table is not used either
    stale.save(out / "fits" / "gibbs.parquet")
    summary = json.loads(invoke("report", out, "--model", "gibbs", "--json").output)
    assert summary["fit"]["beta"]["median"] < 10


def test_assess_with_fewer_h_values_than_parameters_reports_instead_of_failing(tmp_path):
    """Three h values cannot identify the four QASA parameters: the virtual QPU records no estimand
    (its projection is singular), every fit says why it failed, and the report is still written."""
    import qasa

    res = invoke("assess", tmp_path / "a", "--shape", "3", "--h-step", "1.0", "--reads", "1000", "--quiet")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "a" / "report" / "index.html").exists()
    fits = pd.read_csv(tmp_path / "a" / "report" / "fits.csv")
    assert (fits["quality"] == "failed").all() and fits["reason"].str.contains("h values").all()
    truth = qasa.load(tmp_path / "a").device["truth"]
    assert truth and not any(k.startswith("estimand_") for k in truth[0])


def _partial_run(tmp_path, shape, h_step, calls):
    """A run on the sa backend (Chimera ``shape``, ±1 grid of ``h_step``) whose sampler fails after ``calls`` calls."""
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import FailingSampler

    import qasa

    out = tmp_path / "run"
    sa = qasa.get_sampler("sa", topology_type="chimera", topology_shape=shape, beta=4.0)
    protocol = qasa.Protocol.grid(1.0, h_step, reads_per_h=2000, reads_per_call=500, seed=1)
    with pytest.raises(ConnectionError):
        qasa.run(protocol, FailingSampler(sa, calls), out)
    return out


def test_a_report_on_a_partial_dataset_says_it_is_partial(tmp_path):
    """An interrupted run is reported as what it is: calls done of planned, reads collected beside reads
    planned, a note at the top; never "Reads per h value: <planned>" alone."""
    out = _partial_run(tmp_path, [2, 2, 4], 0.1, calls=30)
    res = invoke("report", out, "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    coll = summary["collection"]
    assert coll["partial"] and 0 < coll["done"] < coll["planned"] == 84
    prov = json.loads((out / "report" / "summary.json").read_text())["provenance"]
    assert prov["Calls"].startswith(f"{coll['done']} of 84 planned — partial")
    assert prov["Reads per h value"].startswith("2000 planned; ") and "collected (partial)" in prov["Reads per h value"]
    assert any(n.startswith("Partial dataset") for n in summary["notes"])
    text = invoke("report", out).output
    assert f"PARTIAL dataset: {coll['done']} of 84 planned calls" in text


def test_an_imported_dataset_is_titled_and_described_as_imported(tmp_path):
    from qasa import load as qasa_load

    out = tmp_path / "run"
    invoke("run", out, "--backend", "sa", *SMALL[:-4], "--reads", "2000", *SMALL[-2:], "--quiet")
    assert invoke("export", out, tmp_path / "spin_table.csv").exit_code == 0
    assert invoke("import", tmp_path / "spin_table.csv", tmp_path / "imp", "--topology", "chimera",
                  "--shape", "2,2,4").exit_code == 0
    assert invoke("report", tmp_path / "imp").exit_code == 0
    html_text = (tmp_path / "imp" / "report" / "index.html").read_text()
    assert "QASA assessment of imported data (" in html_text and "assessment of not recorded" not in html_text
    prov = json.loads((tmp_path / "imp" / "report" / "summary.json").read_text())["provenance"]
    assert prov["h-gain schedule"] == prov["Flux-drift compensation"] == "not recorded"
    assert prov["Design"] == "not recorded (imported data)"
    # no per-call counts or times: the noise section says so, and claims no fit of σ_call nor a drift test
    from qasa import drift
    from qasa.analysis import IMPORTED_NOISE

    imp = qasa_load(tmp_path / "imp")
    assert drift.call_clock(imp) == "none"
    summary = json.loads((tmp_path / "imp" / "report" / "summary.json").read_text())
    assert "noise_beyond_shots" not in summary
    assert IMPORTED_NOISE.split(":")[0] in html_text and "Noise beyond shots" in html_text
    assert "every interval" not in html_text and "drift beyond their interval" not in html_text


@pytest.mark.parametrize("args, flag, backend", [
    (["run", "{out}", "--beta", "4", "--h-step", "0.5", "--reads", "100"], "--beta", "emulator"),
    (["run", "{out}", "--backend", "sa", "--preset", "advantage2"], "--preset", "sa"),
    (["run", "{out}", "--backend", "mock", "--ideal"], "--ideal", "mock"),
    (["info", "--backend", "qpu", "--topology", "chimera"], "--topology", "qpu"),
    (["run", "{out}", "--backend", "sa", "--solver", "Advantage_system4.1"], "--solver", "sa"),
])
def test_an_option_that_does_not_apply_to_the_backend_is_refused_in_one_line(tmp_path, args, flag, backend):
    """`--beta` on the emulator or `--preset` on sa used to be dropped silently (a 129 s Pegasus SA job ran)."""
    out = tmp_path / "ds"
    res = CliRunner().invoke(main, [a.replace("{out}", str(out)) for a in args])
    assert res.exit_code != 0 and res.output.startswith("error:") and res.output.strip().count("\n") == 0
    assert f"{flag} does not apply to the {backend} backend" in res.output
    assert not out.exists()


def test_the_library_accepts_a_bare_shape_and_refuses_what_does_not_apply():
    import qasa
    from qasa.errors import SamplerError

    assert qasa.get_sampler("sa", topology_shape=16).properties["topology"]["shape"] == [16]
    with pytest.raises(SamplerError, match=r"topology_shape=\[1.5\] must be a list of positive integers"):
        qasa.get_sampler("sa", topology_shape=[1.5])
    for beta in (4.0, 5.0):          # the sa/mock default too: given is given
        with pytest.raises(SamplerError, match=f"beta={beta} does not apply to the emulator backend"):
            qasa.get_sampler("emulator", beta=beta)
    assert qasa.get_backend("sa", topology_shape=[2]).recipe["beta"] == 5.0      # the default, recorded
    # run() takes a backend name like assess() does
    ds = qasa.run(qasa.Protocol.grid(1.0, 0.5, reads_per_h=100, seed=1, qubits=(30, 31)), "emulator")
    assert len(ds.calls) == 5


def test_messages_a_newcomer_reads(tmp_path):
    """Help without '%%', every --model/--json documented, --backend a choice; a spin table saved with a
    byte-order mark imports; the summary rounds medians to their errors and gives T_eff with its error;
    model comparison prints ΔAIC and never 'p = 0'."""
    for cmd in ("assess", "run", "fit", "report", "plan", "shim", "temperature"):
        text = invoke(cmd, "--help").output
        assert "%%" not in text, cmd
        if "--json" in text:
            assert "Machine-readable output" in text, cmd
        if "--model" in text:
            assert "gibbs" in text.split("--model", 1)[1][:300], cmd          # the option says what it takes
    assert "[emulator|sa|mock|qpu]" in invoke("run", "--help").output.replace("\n", "").replace(" ", "")
    out = tmp_path / "run"
    invoke("run", out, "--backend", "sa", *SMALL[:-4], "--reads", "2000", *SMALL[-2:], "--quiet")
    assert invoke("export", out, tmp_path / "t.csv").exit_code == 0
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "t.csv").read_bytes())
    res = invoke("import", tmp_path / "bom.csv", tmp_path / "imp", "--topology", "chimera", "--shape", "2,2,4")
    assert res.exit_code == 0, res.output
    text = invoke("report", out).output
    assert re.search(r"beta: median \d\.\d+ ± 0\.\d+ +IQR", text) and re.search(r"T_eff = 0\.\d+ ± 0\.\d+", text)
    text = invoke("fit", out, "--compare").output
    assert "ΔAIC 0.0" in text and "p = 0;" not in text and "p = 0 " not in text


def test_no_progress_label_in_a_log(tmp_path):
    """Without a terminal (a log, a pipe) no progress bar is drawn: click printed its bare label, a stray
    'calls' line on stderr."""
    res = CliRunner().invoke(main, ["run", str(tmp_path / "r"), "--backend", "sa", *SMALL])
    assert res.exit_code == 0, res.output
    assert not any(line.strip().startswith("calls") for line in res.output.splitlines())


def test_reads_per_h_collected_counts_each_signed_h_value_apart(tmp_path):
    """+h and −h are two cells of the grid, each planned reads_per_h reads: a partial run's reads
    per h collected is the median over (qubit, h) of what the counts hold, never the |h| pair's sum."""
    import qasa
    from qasa.analysis import collection_status

    out = _partial_run(tmp_path, [1, 1, 4], 0.5, calls=15)
    ds = qasa.load(out)
    c = ds.counts
    truth = int(np.median((c.n_down + c.n_up).groupby([c.qubit, c.h]).sum().to_numpy()))
    coll = collection_status(ds)
    assert coll["partial"] and coll["reads_per_h_collected"] == truth <= 2000


def test_run_dir_alone_on_a_directory_without_a_dataset_is_refused(tmp_path):
    """A run killed before it wrote its metadata leaves a bare directory: `qasa run DIR` alone must not
    start the default full-chip protocol there (it cannot know what the killed run asked for)."""
    bare = tmp_path / "D1"
    (bare / "journal").mkdir(parents=True)
    res = invoke("run", bare)
    assert res.exit_code == 1 and res.output.count("\n") == 1
    assert res.output.startswith(f"error: {bare} exists but holds no qasa dataset") and "remove it" in res.output
    assert sorted(p.name for p in bare.rglob("*")) == ["journal"]          # nothing written
    # with the options of what to start, the existing directory is used
    assert invoke("run", bare, "--backend", "sa", *SMALL, "--quiet").exit_code == 0
    assert (bare / "metadata.json").is_file()
    assert invoke("run", bare).exit_code == 0                             # resumes (already complete)


def test_order_option_sets_the_run_order(tmp_path):
    """``--order sequential`` runs each pass in h order and records it; the default shuffles each pass
    (the calls table's ``position`` is each call's slot; the virtual QPU's clock follows it)."""
    common = ["--shape", "2", "--h-step", "0.25", "--reads", "200", "--reads-per-call", "100", "--quiet", "--seed", "3"]
    assert invoke("run", tmp_path / "seq", *common, "--order", "sequential").exit_code == 0
    assert invoke("run", tmp_path / "shuf", *common).exit_code == 0
    for name, order in (("seq", "sequential"), ("shuf", "shuffled")):
        meta = json.loads((tmp_path / name / "metadata.json").read_text())
        assert meta["protocol"]["order"] == order
    seq = pd.read_parquet(tmp_path / "seq" / "calls.parquet").sort_values("device_time")
    shuf = pd.read_parquet(tmp_path / "shuf" / "calls.parquet").sort_values("device_time")
    assert (seq["position"] == seq["index"]).all() and sorted(shuf["position"]) == list(range(len(shuf)))
    assert (shuf["position"] != shuf["index"]).any() and shuf["position"].is_monotonic_increasing


def test_fit_prints_the_noise_beyond_shots(tmp_path):
    """`qasa fit` on a noisy virtual device prints σ_call's spread over qubits and the device's σ_field with
    its interval (text and --json), the numbers of the fit table's meta."""
    out = tmp_path / "n"
    assert invoke("run", out, "--shape", "2", "--h-step", "0.1", "--reads", "4000", "--reads-per-call", "500",
                  "--quiet", "--seed", "1").exit_code == 0
    res = invoke("fit", out)
    assert res.exit_code == 0 and "sigma_call: median" in res.output and "sigma_field: " in res.output, res.output
    data = json.loads(invoke("fit", out, "--json").output)
    meta = _fit_meta(out)
    assert data["sigma_field"]["sigma_field"] == pytest.approx(meta["sigma_field"]["sigma_field"])
    assert 0.005 < data["sigma_call"]["median"] < 0.03 and data["sigma_call"]["qubits"] == 40


def _fit_meta(out):
    """The meta of the cached qasa fit of dataset ``out``."""
    from qasa.fitting import FitTable

    return FitTable.load(out / "fits" / "qasa.parquet").meta
