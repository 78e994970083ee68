"""Faults and fuzz through the public CLI and API (issue 12): every case ends in ONE ``error:`` line with
exit status 1 and an untouched dataset directory, or in counts identical to a clean run.

Classes driven here: bad options (and a hypothesis fuzz of option values), malformed spin tables (and a
fuzz of random tables), corrupt metadata, read-only and blocked output paths, a write limit (a full
disk), two writers, and a SAPI-compatible server (tests/sapi_server.py, driven by the real
``DWaveSampler``) answering with missing variables, too few reads, bad values, malformed JSON, 429,
5xx while the solver is opened, non-transient errors that echo the token, FAILED problems, problems
that never complete, and submissions slower than the client's request timeout.
"""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qasa
from qasa.cli import main
from qasa.errors import QasaError

sys.path.insert(0, str(Path(__file__).parent))
from sapi_server import SAPIServer  # noqa: E402

TOKEN = "DEV-0000-qasa-fault-secret"
#: Tokens of every place dwave-cloud-client reads: three profiles of a user config file, the local
#: ./dwave.conf, DWAVE_CONFIG_FILE and the environment.
PROFILE_TOKENS = {"defaults": "DEV-defaults-aaaa1111", "prod": "DEV-prod-bbbb2222", "other": "DEV-other-cccc3333"}
LOCAL_TOKEN = "DEV-local-dddd4444"
EXTRA_TOKEN = "DEV-extra-eeee5555"
ENV_TOKEN = "DEV-env-ffff6666"
ALL_TOKENS = {TOKEN, LOCAL_TOKEN, EXTRA_TOKEN, ENV_TOKEN, *PROFILE_TOKENS.values()}
SMALL_SA = ["--backend", "sa", "--topology", "chimera", "--shape", "2", "--h-step", "0.5", "--reads", "200",
            "--seed", "1", "--quiet"]


def cli(*args, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def one_error(res, *needles: str) -> str:
    """The result is exit 1 with exactly one line on stderr, ``error: ...``, containing ``needles``."""
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 1, (res.exit_code, res.output)
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def stored(tmp_path_factory) -> Path:
    """A small finished dataset (sa backend)."""
    out = tmp_path_factory.mktemp("faults") / "stored"
    assert cli("run", out, *SMALL_SA).exit_code == 0
    return out


# -- bad options --------------------------------------------------------------------------------
BAD_OPTIONS = [
    (["--beta", "nan"], "--beta"), (["--beta", "inf"], "--beta"), (["--beta", "-1"], "--beta"),
    (["--shape", "0"], "--shape"), (["--shape", "-4"], "--shape"), (["--shape", "16 16 4"], "--shape"),
    (["--topology", "pegasus", "--shape", "16,16,4"], "pegasus shape is one number m (e.g. 16 for P16)"),
    (["--shape", "2000"], "at most 50000"),
    (["--reads", "1e12"], "--reads"), (["--reads", "1000000000000"], "at most 100000 are allowed"),
    (["--h-values", ""], "--h-values"), (["--h-values", "nan"], "--h-values"), (["--h-values", "1,,2"], "--h-values"),
    (["--h-step", "0"], "--h-step"), (["--h-max", "inf"], "--h-max"),
    (["--h-max", "1e308", "--h-step", "1e-308"], "'--h-max'/'--h-step'"),      # was an OverflowError
    (["--keep-samples", "-1"], "--keep-samples"), (["--retries", "-1"], "--retries"),
    (["--in-flight", "0"], "--in-flight"), (["--in-flight", "5000"], "--in-flight"),
    (["--call-timeout", "0"], "--call-timeout"),
    (["--max-qpu-seconds", "nan"], "--max-qpu-seconds"), (["--max-qpu-seconds", "inf"], "--max-qpu-seconds"),
    (["--max-qpu-seconds", "0"], "--max-qpu-seconds"), (["--max-qpu-seconds", "-5"], "--max-qpu-seconds"),
    (["--annealing-time", "20"], "annealing_time (20 µs) is not accepted by StructuredSASampler"),
    (["--annealing-time", "nan"], "--annealing-time"),
    (["--qubits", "1,x"], "--qubits"), (["--num-qubits", "0"], "--num-qubits"), (["--seed", "-3"], "--seed"),
    (["--no-such-option"], "No such option"),
]


@pytest.mark.parametrize("args, needle", BAD_OPTIONS)
def test_bad_options_refused_in_one_line_before_anything_is_written(tmp_path, stored, args, needle):
    fresh = tmp_path / "fresh"
    one_error(cli("run", fresh, "--backend", "sa", "--topology", "chimera", "--shape", "2", *args), needle)
    assert not fresh.exists()
    before = snapshot(stored)      # on a finished dataset: refused too (by this check or the stored protocol)
    one_error(cli("run", stored, "--backend", "sa", "--topology", "chimera", "--shape", "2", *args))
    assert snapshot(stored) == before


@pytest.mark.parametrize("schedule", ["0,1;1,0.5;2,1.5", "0,1;1,-0.5;2,1"])
def test_reverse_anneal_outside_0_1_refused(tmp_path, schedule):
    one_error(cli("run", tmp_path / "x", "--shape", "2", "--reads", "100", "--anneal-schedule", schedule),
              "anneal_schedule value s=", "[0, 1]")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "0", "-1"])
def test_budget_from_the_environment_is_checked_like_the_option(tmp_path, value):
    one_error(cli("assess", tmp_path / "x", "--shape", "2", env={"QASA_MAX_QPU_SECONDS": value}), "--max-qpu-seconds")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("kwargs", [{"max_qpu_seconds": math.nan}, {"max_qpu_seconds": math.inf},
                                    {"max_qpu_seconds": 0}, {"max_qpu_seconds": -1.0}, {"keep_samples": -1},
                                    {"retries": -1}, {"retries": 10_000}, {"in_flight": 0}, {"call_timeout": 0.0},
                                    {"call_timeout": math.nan}])
def test_library_run_refuses_bad_run_options_before_writing(tmp_path, chimera_sa, kwargs):
    with pytest.raises(QasaError):
        qasa.run(qasa.Protocol.grid(1.0, 0.5, reads_per_h=100, seed=1), chimera_sa, tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_usage_errors_follow_the_same_contract():
    one_error(cli("no-such-command"), "No such command")
    one_error(cli("run"), "Missing argument")
    one_error(cli("fit", "/no/such/dataset"), "does not exist")
    assert cli("--help").exit_code == 0
    bare = cli()                                   # `qasa` alone prints the help
    assert bare.exit_code == 0 and "Commands:" in bare.output and not bare.stderr


_values = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-10**15, 10**15).map(str),
                    st.text(alphabet="0123456789.,-+eEinfa ", max_size=8))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(["--beta", "--h-max", "--h-step", "--reads", "--reads-per-call", "--gauges-per-h",
                               "--h-values", "--shape", "--qubits", "--num-qubits", "--seed"]), value=_values)
def test_fuzzed_option_values_plan_or_refuse_in_one_line(option, value):
    """Any value: the plan is made (exit 0) or refused in one line (exit 1); never a traceback or exit 2."""
    res = cli("plan", "--backend", "sa", "--topology", "chimera", "--shape", "2", option, value)
    if res.exit_code != 0:
        one_error(res)


# -- spin tables --------------------------------------------------------------------------------
BAD_TABLES = [
    ("h,samples,spin_1\n0.1,10,2.5\n", "'2.5' is not a whole number"),
    ("h,samples,spin_1\n0.1,1e30,5\n", "'1e30' is not a whole number of reads in [0, 2^53]"),
    ("h,samples,spin_5,spin_05\n0.1,10,1,2\n", "'spin_5' and 'spin_05' both name qubit 5"),
    ("h,samples,spin_5,spin_5\n0.1,10,1,2\n", "'spin_5' appears twice"),
    ("h,samples,spin_1\n0.1,10,2\n0.1,10,3\n", "h=0.1 appears on lines 2 and 3"),
    ("h,samples,spin_1\n", "no rows"),
    ("", "is empty"),
    ("h,samples,spin_1\n0.1,10,abc\n", "'abc' is not a number"),
    ("h,samples,spin_1\nxyz,10,1\n", "'xyz' is not a number"),
    ("h,samples,spin_1\nnan,10,1\n", "is not finite"),
    ("h,samples,spin_1\n0.1,10,\n", "empty cell"),
    ("h,samples,spin_1\n0.1,10,11\n", "exceed samples=10"),
    ("h,samples,spin_1\n0.1,0,0\n", "at least 1"),
    ("h,samples,spin_1\n0.1,10,-1\n", "'-1' is not a whole number"),
    ("h,samples,spin_-1\n0.1,10,1\n", "bad spin column name"),
    ("h,samples,spin_1\n0.1,10\n", "2 cells for 3 columns"),
    ("a,b\n1,2\n", "need columns h, samples"),
    # qubit ids beyond int64 (was an OverflowError naming no column); |h| beyond 4 (was accepted, failed later)
    ("h,samples,spin_0,spin_99999999999999999999\n0.1,10,1,2\n", "'spin_99999999999999999999': qubit id out of range"),
    ("h,samples,spin_1\n-1,10,9\n1e308,10,1\n", "line 3, column 'h': '1e308' is outside the allowed range [-4, 4]"),
    ("h,samples,spin_1\n-4.5,10,9\n1,10,1\n", "line 2, column 'h': '-4.5' is outside the allowed range [-4, 4]"),
]


@pytest.mark.parametrize("text, needle", BAD_TABLES)
def test_malformed_spin_tables_refused_in_one_line(tmp_path, text, needle):
    (tmp_path / "t.csv").write_text(text)
    one_error(cli("import", tmp_path / "t.csv", tmp_path / "out"), needle)
    assert not (tmp_path / "out").exists()


_cell = st.one_of(st.integers(0, 30).map(str), st.sampled_from(["", "x", "1.5", "1e30", "nan", "-2", "inf"]))


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(st.tuples(st.sampled_from(["-0.5", "0", "0.5", "1", "abc"]), _cell, _cell, _cell),
                     min_size=0, max_size=4))
def test_fuzzed_spin_tables_import_exactly_or_refuse_in_one_line(tmp_path_factory, rows):
    folder = tmp_path_factory.mktemp("fuzz")
    text = "h,samples,spin_3,spin_7\n" + "".join(",".join(r) + "\n" for r in rows)
    (folder / "t.csv").write_text(text)
    res = cli("import", folder / "t.csv", folder / "out")
    if res.exit_code != 0:
        one_error(res)
        assert not (folder / "out").exists()
        return
    ds = qasa.Dataset.load(folder / "out")
    r = ds.response(frame="nominal")
    expected = {(float(h), q): (int(float(c)), int(float(s))) for h, s, a, b in rows for q, c in ((3, a), (7, b))}
    for (h, q), (down, total) in expected.items():
        i, j = list(r.qubits).index(q), list(r.h).index(h)
        assert (r.n_down[i, j], r.n_total[i, j]) == (down, total)


@pytest.mark.parametrize("args, needle", [
    (["--topology", "pegasus", "--shape", "16,16,4"], "a pegasus shape is one number m"),   # was accepted; every report failed
    (["--topology", "chimera", "--shape", "0"], "--shape"),
    (["--shape", "16"], "--shape 16 needs --topology"),                          # was silently ignored
    (["--topology", "chimera", "--shape", "1"], "qubit 9 is not a qubit of a chimera 1,1,4 graph"),
])
def test_import_checks_the_topology_before_writing(tmp_path, args, needle):
    (tmp_path / "t.csv").write_text("h,samples,spin_0,spin_9\n-1,10,9,8\n1,10,1,2\n")
    one_error(cli("import", tmp_path / "t.csv", tmp_path / "out", *args), needle)
    assert not (tmp_path / "out").exists()
    res = cli("import", tmp_path / "t.csv", tmp_path / "ok", "--topology", "chimera", "--shape", "2")
    assert res.exit_code == 0, res.output
    assert qasa.Dataset.load(tmp_path / "ok").device["topology_shape"] == [2, 2, 4]   # the full shape, as run stores it


@pytest.mark.parametrize("target", ["beta=1e-300", "b=1e-300", "eta=1e-300", "beta=0.001%"])
def test_unreachable_plan_target_is_refused_naming_it(target):
    """Was an OverflowError (infinite reads per qubit) naming no option."""
    one_error(cli("plan", "--backend", "sa", "--topology", "chimera", "--shape", "1", "--design", "adaptive",
                  "--target", target), f"--target {target}", "at most 1e+08 reads per qubit")


def test_bootstrap_replicates_are_bounded(stored):
    from qasa.fitting import MAX_BOOTSTRAP

    before = snapshot(stored)
    one_error(cli("fit", stored, "--bootstrap", "100000000"), "--bootstrap", f"0<=x<={MAX_BOOTSTRAP}")
    with pytest.raises(ValueError, match=rf"bootstrap=100000000 must be an integer in \[0, {MAX_BOOTSTRAP}\]"):
        qasa.fit(qasa.Dataset.load(stored), bootstrap=100_000_000)
    assert snapshot(stored) == before


def test_report_into_a_file_is_refused_before_the_fits_are_written(tmp_path, stored):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(stored, out)
    shutil.rmtree(out / "fits", ignore_errors=True)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    before = snapshot(out)
    one_error(cli("report", out, "--out", blocker), f"--out {blocker}", "is a file")
    one_error(cli("report", out, "--out", blocker / "sub"), "is a file")
    assert snapshot(out) == before and not (out / "fits").exists()      # was: fits/ written, then refused
    with pytest.raises(QasaError, match="is a file"):
        qasa.assess("sa", tmp_path / "new", report_dir=blocker, topology_type="chimera", topology_shape=[1])
    assert not (tmp_path / "new").exists() and blocker.read_text() == "x"


def _degenerate_dataset(out: Path) -> None:
    """One qubit read at h = -1 and h = 1e308 (saved through the library, past the import's |h| bound)."""
    import numpy as np
    import pandas as pd

    h, ids = np.array([-1.0, 1e308]), ["spin_table-h00000", "spin_table-h00001"]
    counts = pd.DataFrame({"call_id": ids, "qubit": [0, 0], "h": h, "n_down": [1, 9], "n_up": [9, 1]})
    calls = pd.DataFrame({"call_id": pd.Series(ids, dtype="string"), "h": h, "num_reads": [10, 10]})
    meta = {"protocol": None, "device": {"solver": None, "topology_type": None, "topology_shape": None,
                                         "nodelist": [0], "edgelist": None}, "created": "2026-01-01T00:00:00+00:00"}
    qasa.Dataset(counts, calls, meta).save(out)


@pytest.mark.parametrize("command", [["fit", "--compare"], ["report"]])
def test_degenerate_data_print_no_raw_warnings(tmp_path, command):
    """Was 28 (fit --compare) and 14 (report) lines of raw numpy RuntimeWarnings and their source lines;
    now every line on stderr is one `warning: ...`, the floating-point ones summed up in one."""
    out = tmp_path / "deg"
    _degenerate_dataset(out)
    proc = subprocess.run([sys.executable, "-m", "qasa.cli", command[0], str(out), *command[1:]],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(Path(qasa.__file__).parent.parent)})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines and all(line.startswith("warning: ") for line in lines), proc.stderr
    assert len(lines) == len(set(lines)) and sum("floating-point" in line for line in lines) == 1
    assert "RuntimeWarning" not in proc.stderr


def test_qasa_warnings_are_one_line_each(stored, tmp_path):
    """A warning of qasa's own (export in the nominal frame) is one `warning:` line, not Python's two."""
    res = cli("export", stored, tmp_path / "t.csv")
    assert res.exit_code == 0
    assert res.stderr.strip().splitlines() == [line for line in res.stderr.strip().splitlines()
                                               if line.startswith("warning: gauges left unequal")]
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="session")
def adaptive_done(tmp_path_factory) -> Path:
    """A finished adaptive assessment (tests/adaptive_worker.py: 40 qubits, 2 rounds)."""
    from adaptive_worker import assess

    out = tmp_path_factory.mktemp("adaptive") / "done"
    assert assess(out).metadata["adaptive"]["result"]["rounds"] >= 1
    return out


def _plan_edits(text: str) -> dict[str, str]:
    plan = json.loads(text)
    return {"not valid JSON": text[: len(text) // 2],
            "missing key(s) ['calls']": json.dumps({k: v for k, v in plan.items() if k != "calls"}),
            "missing key(s) ['fields']": json.dumps({k: v for k, v in plan.items() if k != "fields"}),
            "a JSON list, not an object": "[1, 2]",
            "calls='7'; allowed: an integer in [1, 100000]": json.dumps({**plan, "calls": "7"}),
            "reads_per_call=3; allowed: the protocol's": json.dumps({**plan, "reads_per_call": 3}),
            "'counts' must hold one list per qubit": json.dumps({**plan, "counts": plan["counts"][:-1]}),
            "fields must be finite numbers": json.dumps({**plan, "fields": [[None] * len(f) for f in plan["fields"]]}),
            "counts must be non-negative integers summing to calls": json.dumps(
                {**plan, "counts": [[c + 1 for c in row] for row in plan["counts"]]})}


@pytest.mark.parametrize("needle", list(_plan_edits(json.dumps({"calls": 1, "fields": [[0.0]], "counts": [[1]]}))))
def test_damaged_round_plan_is_refused_naming_the_file(tmp_path, adaptive_done, needle):
    """Was a raw JSONDecodeError / KeyError naming no file; now one line naming the plan file and what is
    allowed, before anything is written or run (the directory stays byte-identical)."""
    import shutil

    from adaptive_worker import assess

    from qasa.errors import DatasetError

    out = tmp_path / "copy"
    shutil.copytree(adaptive_done, out)
    plan = out / "design" / "round-001.json"
    plan.write_text(_plan_edits(plan.read_text())[needle])
    before = snapshot(out)
    with pytest.raises(DatasetError) as info:
        assess(out)
    message = str(info.value)
    assert f"damaged round plan {plan}" in message and needle in message
    assert "\n" not in message and snapshot(out) == before


@pytest.mark.parametrize("kwargs, needle", [({"fraction": True}, "fraction=True is not a number"),
                                            ({"fraction": "0.9"}, "fraction='0.9' is not a number"),
                                            ({"max_rounds": True}, "max_rounds=True is not a number"),
                                            ({"max_qpu_seconds": "5"}, "max_qpu_seconds='5' is not a number")])
def test_adaptive_options_of_the_wrong_type_are_refused_before_writing(tmp_path, kwargs, needle):
    """``fraction=True`` ran as 1.0 and ``fraction="0.9"`` was a raw TypeError."""
    from adaptive_worker import TARGET, sampler

    from qasa import adaptive

    with pytest.raises(QasaError if "qpu" in needle else ValueError, match=needle):
        adaptive.assess_adaptive(sampler(), tmp_path / "x", TARGET, protocol=adaptive.pilot_protocol(5000, seed=1),
                                 **kwargs)
    assert not (tmp_path / "x").exists()


# -- files and directories ---------------------------------------------------------------------
@pytest.mark.parametrize("edit, needle", [
    (lambda m: "{not json", "cannot read"),
    (lambda m: json.dumps({**json.loads(m), "protocol": [1, 2]}), "protocol"),
    (lambda m: json.dumps({**json.loads(m), "runs": "yesterday"}), "runs"),
    (lambda m: json.dumps({**json.loads(m), "format_version": 99}), "format version"),
])
@pytest.mark.parametrize("command", ["fit", "report", "export"])
def test_malformed_metadata_gives_one_line(tmp_path, stored, edit, needle, command):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(stored, out)
    meta = out / "metadata.json"
    meta.write_text(edit(meta.read_text()))
    before = snapshot(out)
    extra = [tmp_path / "t.csv"] if command == "export" else []
    one_error(cli(command, out, *extra), needle)
    assert snapshot(out) == before


def test_blocked_output_paths_give_one_line(tmp_path, stored):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    one_error(cli("run", blocker, *SMALL_SA), "is a file")
    one_error(cli("run", blocker / "sub", *SMALL_SA))
    one_error(cli("export", stored, tmp_path / "no" / "such" / "dir" / "t.csv"))
    assert blocker.read_text() == "not a directory"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_directory_gives_one_line(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        one_error(cli("run", folder / "out", *SMALL_SA), "Permission denied")
    finally:
        folder.chmod(0o755)


def test_full_disk_gives_one_line_and_a_resumable_dataset(tmp_path, stored):
    """A write limit (RLIMIT_FSIZE, SIGXFSZ ignored: writes fail with EFBIG as on a full disk)."""
    out = tmp_path / "full"

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))

    proc = subprocess.run([sys.executable, "-m", "qasa.cli", "run", str(out), *SMALL_SA], preexec_fn=limit,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(Path(qasa.__file__).parent.parent)})
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "File too large" in lines[0], proc.stderr
    assert cli("run", out, *SMALL_SA).exit_code == 0      # resumed without the limit
    assert qasa.Dataset.load(out).counts.equals(qasa.Dataset.load(stored).counts)


def test_second_writer_refused_in_one_line(tmp_path, stored):
    import shutil

    from qasa.store import DatasetStore

    out = tmp_path / "busy"
    shutil.copytree(stored, out)
    before = snapshot(out)
    with DatasetStore(out).writing():
        one_error(cli("run", out, *SMALL_SA), "being written by another qasa process")
        assert snapshot(out) == before


# -- a faulty SAPI server ------------------------------------------------------------------------
PROTOCOL = qasa.Protocol.grid(1.0, 0.5, reads_per_h=500, reads_per_call=250, seed=3)   # 10 calls
BUDGET = 3600.0


def _sampler(server, **config):
    from dwave.system import DWaveSampler

    return DWaveSampler(endpoint=server.endpoint, token=TOKEN, solver=server.solver_name, **config)


@pytest.fixture(scope="module")
def clean(qpu):
    with SAPIServer(qpu) as server:
        ds = qasa.run(PROTOCOL, _sampler(server), in_flight=4, max_qpu_seconds=BUDGET)
        assert server.solved == len(ds.calls) == 10
    return ds


def _faulty_ids(server) -> set[str]:
    return {pid for pid, rec in server.problems.items() if rec.get("fault")}


@pytest.mark.parametrize("fault, extra_paid", [("missing_variable", 2), ("fewer_reads", 2), ("bad_value", 2),
                                               ("malformed_json", 0)])
def test_bad_answers_are_never_counted(qpu, clean, isolated, fault, extra_paid):
    """Answers leaving out a qubit, with too few reads or values other than ±1 are fetched again by id,
    then resubmitted; a malformed one is fetched again. Counts equal the clean run's."""
    with SAPIServer(qpu, answer_faults={2: fault, 5: fault}) as server:
        ds = qasa.run(PROTOCOL, _sampler(server), in_flight=4, backoff=0.01, max_qpu_seconds=BUDGET)
        paid, bad = server.solved, _faulty_ids(server)
    assert ds.counts.equals(clean.counts)
    assert (ds.calls["num_reads"] == 250).all()                 # the reads actually counted
    assert paid == len(ds.calls) + extra_paid
    kept = set(ds.calls["problem_id"])
    assert len(bad) == 2 and (bad <= kept if fault == "malformed_json" else not bad & kept)
    stats = ds.metadata["runs"][-1]["leap"]
    assert stats["fetched_again_by_id"] >= 2 and stats["retries"] >= 2


@pytest.mark.parametrize("fault, needle", [("missing_variable", "leaves out 1 of the"),
                                           ("fewer_reads", "holds 249 reads; 250 were requested"),
                                           ("bad_value", "spins must be -1 or +1")])
def test_bad_answer_without_retries_is_refused_in_one_line(qpu, isolated, tmp_path, fault, needle):
    out = tmp_path / "qpu"
    with SAPIServer(qpu, answer_faults={1: fault}) as server:
        isolated.setenv("DWAVE_API_ENDPOINT", server.endpoint)
        isolated.setenv("DWAVE_API_TOKEN", TOKEN)
        res = cli("run", out, "--backend", "qpu", "--solver", server.solver_name, "--h-step", "0.5", "--reads", "500",
                  "--reads-per-call", "250", "--seed", "3", "--retries", "0", "--in-flight", "2",
                  "--max-qpu-seconds", "100", "--quiet")
        bad = _faulty_ids(server)
    one_error(res, "failed after 0 retries", "AnswerError", needle)
    ds = qasa.Dataset.load(out)        # (no call may be stored: under a budget the first call goes alone)
    kept = set(ds.calls["problem_id"]) if "problem_id" in ds.calls else set()
    assert not bad & kept and ds.metadata["failures"]


def test_rate_limits_and_5xx_are_retried_without_paying_twice(qpu, clean, isolated):
    with SAPIServer(qpu, post_faults={1: 429, 2: 429, 4: 503}, retry_after=0.05, fail_rate=0.1, seed=2) as server:
        ds = qasa.run(PROTOCOL, _sampler(server), in_flight=4, backoff=0.01, retries=8, max_qpu_seconds=BUDGET)
        paid = server.solved
    assert ds.counts.equals(clean.counts) and paid == len(ds.calls)


def _record_waits(monkeypatch) -> list[float]:
    """The retry waits qasa.leap asks for, recorded instead of slept (the retries, not the clock, are tested)."""
    from qasa import leap

    waits: list[float] = []
    real = leap.retry_delay
    monkeypatch.setattr(leap, "retry_delay", lambda exc, backoff, attempt: waits.append(real(exc, backoff, attempt)) or 0.0)
    return waits


def test_retry_waits_double_honour_retry_after_and_are_capped():
    from types import SimpleNamespace

    from qasa.leap import MAX_RETRY_WAIT, retry_delay

    assert [retry_delay(None, 0.5, a) for a in (1, 2, 3)] == [0.5, 1.0, 2.0]
    after = SimpleNamespace(response=SimpleNamespace(headers={"Retry-After": "7"}))
    assert retry_delay(after, 0.5, 1) == 7.0 and retry_delay(after, 0.5, 5) == 8.0      # the longer of the two
    assert retry_delay(SimpleNamespace(retry_after="soon"), 0.5, 2) == 1.0               # unreadable: ignored
    assert retry_delay(SimpleNamespace(retry_after=1e9), 0.5, 1) == MAX_RETRY_WAIT < 1e9


def test_5xx_while_the_solver_is_opened_is_retried(qpu, isolated, tmp_path):
    waits = _record_waits(isolated)
    with SAPIServer(qpu, solver_failures=2) as server:
        isolated.setenv("DWAVE_API_ENDPOINT", server.endpoint)
        isolated.setenv("DWAVE_API_TOKEN", TOKEN)
        res = cli("info", "--backend", "qpu", "--solver", server.solver_name, "--json")
        assert res.exit_code == 0 and server.solver_failures == 0, res.output     # two 503s, retried
        server.solver_failures = 100
        isolated.setenv("XDG_CACHE_HOME", str(tmp_path / "cold-cache"))      # no cached solver list
        one_error(cli("info", "--backend", "qpu", "--solver", server.solver_name), "cannot open the QPU solver",
                  "after 3 retries")
    assert waits == [0.5, 1.0, 0.5, 1.0, 2.0]          # backoff 0.5 s doubling: twice, then three times


def test_exhausted_retries_give_one_line(qpu, isolated, tmp_path):
    waits = _record_waits(isolated)
    with SAPIServer(qpu, post_faults={n: 503 for n in range(1, 50)}) as server:
        isolated.setenv("DWAVE_API_ENDPOINT", server.endpoint)
        isolated.setenv("DWAVE_API_TOKEN", TOKEN)
        res = cli("run", tmp_path / "x", "--backend", "qpu", "--solver", server.solver_name, "--h-step", "0.5",
                  "--reads", "500", "--reads-per-call", "250", "--retries", "2", "--max-qpu-seconds", "100", "--quiet")
        assert server.solved == 0
    one_error(res, "failed after 2 retries (3 submissions)", "injected 503")
    assert set(waits) == {0.5, 1.0}                    # each call's retries back off 0.5 s, then 1 s


def test_failed_problem_gives_one_line_and_keeps_the_calls_finished(qpu, isolated, tmp_path):
    out = tmp_path / "failed"
    with SAPIServer(qpu, answer_faults={6: "failed"}) as server:
        isolated.setenv("DWAVE_API_ENDPOINT", server.endpoint)
        isolated.setenv("DWAVE_API_TOKEN", TOKEN)
        res = cli("run", out, "--backend", "qpu", "--solver", server.solver_name, "--h-step", "0.5", "--reads", "500",
                  "--reads-per-call", "250", "--seed", "3", "--in-flight", "2", "--max-qpu-seconds", "100", "--quiet")
        paid = server.solved
    one_error(res, "the QPU service refused problem", "SolverFailureError", "injected failure")
    ds = qasa.Dataset.load(out)
    assert len(ds.calls) >= 5 and len(ds.calls) == paid - 1    # every answer paid for, but the FAILED one, is kept


def test_problem_that_never_completes_fails_clearly_then_is_fetched_by_id(qpu, clean, isolated, tmp_path):
    out = tmp_path / "stuck"
    args = ["run", out, "--backend", "qpu", "--h-step", "0.5", "--reads", "500", "--reads-per-call", "250",
            "--seed", "3", "--in-flight", "4", "--retries", "1", "--call-timeout", "1", "--max-qpu-seconds", "100",
            "--quiet"]
    with SAPIServer(qpu, answer_faults={3: "never_complete"}) as server:
        isolated.setenv("DWAVE_API_ENDPOINT", server.endpoint)
        isolated.setenv("DWAVE_API_TOKEN", TOKEN)
        args[4:4] = ["--solver", server.solver_name]
        line = one_error(cli(*args), "did not complete within 1 s", "in_flight.json")
        stuck = json.loads((out / "in_flight.json").read_text())
        assert len(stuck) == 1 and list(stuck.values())[0] in line
        assert len(qasa.Dataset.load(out).calls) == 9                # the others finished and were saved
        server.complete_all()
        res = cli(*args)
        assert res.exit_code == 0, res.output
        paid = server.solved
    ds = qasa.Dataset.load(out)
    assert paid == len(ds.calls) == 10 and ds.counts.equals(clean.counts)
    assert not (out / "in_flight.json").exists()


def test_server_slower_than_the_request_timeout_is_not_paid_again(qpu, clean, isolated):
    """Every submission replies after the client gave up: the problems are found by label, not resubmitted."""
    with SAPIServer(qpu, post_delay=1.0) as server:
        ds = qasa.run(PROTOCOL, _sampler(server, request_timeout=0.3), in_flight=10, backoff=0.01,
                      max_qpu_seconds=BUDGET)
        paid = server.solved
    assert paid == len(ds.calls) == 10 and ds.counts.equals(clean.counts)
    assert ds.metadata["runs"][-1]["leap"]["found_by_label"] >= 1


# -- tokens ------------------------------------------------------------------------------------
def _configure_every_token(isolated, tmp_path, endpoint, config_file: bool = True) -> None:
    """Tokens in a user config file (three profiles), ./dwave.conf, the environment and, if
    ``config_file``, DWAVE_CONFIG_FILE (which then replaces the search of the files: the profiles of
    the others stay configured for ``dwave`` commands without it)."""
    user = tmp_path / "xdg" / "dwave"
    user.mkdir(parents=True)
    (user / "dwave.conf").write_text("".join(f"[{name}]\ntoken = {tok}\nendpoint = {endpoint}\n"
                                             for name, tok in PROFILE_TOKENS.items()))
    (tmp_path / "dwave.conf").write_text(f"[local]\ntoken = {LOCAL_TOKEN}\n")
    (tmp_path / "extra.conf").write_text(f"[extra]\ntoken = {EXTRA_TOKEN}\n")
    if config_file:
        isolated.setenv("DWAVE_CONFIG_FILE", str(tmp_path / "extra.conf"))
    isolated.setenv("DWAVE_API_TOKEN", ENV_TOKEN)


@pytest.mark.parametrize("status", [400, 403])
@pytest.mark.parametrize("traceback", [False, True])
def test_no_configured_token_is_written_or_printed_when_the_server_echoes_it(qpu, isolated, tmp_path, status,
                                                                               traceback):
    out = tmp_path / "echo"
    with SAPIServer(qpu, echo_token_status=status) as server:
        _configure_every_token(isolated, tmp_path, server.endpoint, config_file=False)
        isolated.delenv("DWAVE_API_TOKEN")                              # the profile's token authenticates
        if traceback:
            isolated.setenv("QASA_TRACEBACK", "1")
        res = cli("run", out, "--backend", "qpu", "--profile", "prod", "--solver", server.solver_name,
                  "--h-step", "0.5", "--reads", "500", "--retries", "0", "--max-qpu-seconds", "100", "--quiet")
        assert PROFILE_TOKENS["prod"] in server.tokens_seen              # the token did authenticate...
    assert res.exit_code == 1 and "<token>" in res.output
    if not traceback:
        one_error(res, "the QPU service refused the submission")
    printed = res.output + res.stderr
    written = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert json.loads((out / "metadata.json").read_text())["failures"]
    for token in ALL_TOKENS - {EXTRA_TOKEN, ENV_TOKEN}:                  # ...and shows up nowhere
        assert token not in printed and token.encode() not in written, token


def test_redaction_covers_every_profile_file_and_the_environment(isolated, tmp_path):
    from qasa.redact import redact, tokens

    _configure_every_token(isolated, tmp_path, "http://127.0.0.1:1/")
    assert tokens() >= ALL_TOKENS - {TOKEN}
    text = " ".join(sorted(ALL_TOKENS - {TOKEN}))
    assert not any(t in redact(text) for t in ALL_TOKENS)
