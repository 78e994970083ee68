"""The ``qasa`` command line: thin wrappers that parse, call the library and print.

Commands: ``info``, ``run``, ``fit``, ``report``, ``assess`` (run + fit + report), ``plan`` (QPU time
and calls before a run), ``compare`` (assessments of one device), ``analogues`` (each schedule shape
on SGD, simulated annealing and the QPU), ``import`` and ``export`` (the reference ``spin_table.csv``). Every
command prints text by default and JSON with ``--json``; a handled error prints one line
``error: ...`` on stderr and exits with status 1.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import click

from qasa.errors import QasaError
from qasa.fitting import MAX_BOOTSTRAP
from qasa.leap import MAX_IN_FLIGHT, MAX_RETRIES
from qasa.models import MODELS, compared_models
from qasa.parameters import format_value
from qasa.redact import redact

__all__ = ["main"]

DEFAULT_BACKEND = "emulator"



class _Group(click.Group):
    """The qasa command group: every failure ends in ONE line ``error: ...`` on stderr and exit 1.

    Usage errors (unknown option, a value out of its range), errors qasa raises for bad input
    (:class:`QasaError`), errors of the file system (disk full, read-only or blocked paths), errors
    of the QPU service that were not worth retrying or whose retries ran out: all the same way. No
    traceback is printed (``QASA_TRACEBACK=1`` adds one, redacted, for bug reports). Everything
    printed goes through :func:`qasa.redact.redact`: no configured Leap token is ever shown.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
        from qasa.redact import redacting_streams

        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        argv = list(sys.argv[1:] if args is None else args)
        with redacting_streams(_profile_of(argv)), _fewer_collections():
            code = self._guarded(argv, prog_name, complete_var, **extra)
        sys.exit(code)

    def _guarded(self, argv, prog_name, complete_var, **extra) -> int:
        # no raw Python warning reaches stderr: each distinct one is shown as ONE line `warning: ...`
        # after a command that succeeded (a failure prints its one `error:` line only)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            code = self._invoke(argv, prog_name, complete_var, **extra)
        if code == 0:
            for line in warning_lines(caught):
                click.echo(line, err=True)
        return code

    def _invoke(self, argv, prog_name, complete_var, **extra) -> int:
        try:
            rv = super().main(argv, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:          # --help, --version
            return int(exc.exit_code)
        except _NO_ARGS_IS_HELP as exc:               # `qasa` alone: the help, as --help
            click.echo(exc.ctx.get_help())
            return 0
        except click.ClickException as exc:           # usage errors: same contract as every other error
            hint = ""
            ctx = getattr(exc, "ctx", None)
            if isinstance(exc, click.UsageError) and ctx is not None:
                hint = f" (see '{ctx.command_path} --help')"
            return _fail(exc.format_message() + hint)
        except (click.Abort, KeyboardInterrupt, EOFError):
            return _fail("interrupted; every call finished so far is saved (run again to resume)")
        except BaseException as exc:                  # noqa: BLE001 - the one place that turns errors into a line
            if isinstance(exc, SystemExit):
                return int(exc.code or 0) if isinstance(exc.code, int) else 1
            if os.environ.get("QASA_TRACEBACK"):
                import traceback

                sys.stderr.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
            return _fail(error_message(exc))
        return rv if isinstance(rv, int) else 0


_EXIT_FREEZE = False


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """Run a command with less memory housekeeping (both settings are undone afterwards).

    - Cyclic garbage collection: a command allocates millions of small objects (tables, records,
      figures) next to the hundreds of thousands that importing numpy, pandas and scipy created; the
      collector's full passes over the latter cost ~0.4 s of ``qasa assess``. Everything alive now is
      moved out of its way (``gc.freeze``; any garbage among it is collected after the command, once
      ``gc.unfreeze`` hands it back) and the youngest generation is collected every 10 000
      allocations instead of 700. When the process ends, everything is frozen too (``atexit``): the
      interpreter's last collection over millions of objects took ~0.3 s, for memory the system
      takes back anyway (every file qasa writes is closed before; exit handlers still run).
    - The C allocator (glibc only, :func:`_reuse_freed_memory`): the arrays of a full device (1–30 MB
      each) are allocated and freed hundreds of times; by default each one is mapped fresh from the
      kernel and unmapped when freed, ~0.4 s of page faults in ``qasa assess``.
    """
    global _EXIT_FREEZE
    old = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(10_000, *old[1:])
    if not _EXIT_FREEZE:     # at exit, a last collection over every object would cost ~0.3 s: nothing
        atexit.register(gc.freeze)        # is left to collect when the process ends (atexit runs first)
        _EXIT_FREEZE = True
    restore = _reuse_freed_memory()
    try:
        yield
    finally:
        restore()
        gc.unfreeze()
        gc.set_threshold(*old)


def _reuse_freed_memory() -> Callable[[], None]:
    """Let glibc's malloc keep freed blocks up to 32 MB for reuse (``mallopt``); return the undo.

    Blocks up to 32 MB (the largest mmap threshold glibc accepts) come from the heap, which grows in
    steps of 256 MB and is not trimmed while the command runs; the undo restores glibc's defaults
    (128 KiB thresholds) and returns the free memory to the system (``malloc_trim``). Elsewhere (not
    glibc) nothing changes.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        mallopt, trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim_threshold, top_pad, mmap_threshold = -1, -2, -3           # glibc's M_* parameter numbers
    # (mallopt takes a C int: 2**31 − 1 is "never trim"; a larger Python int would wrap around to 0)
    if not (mallopt(mmap_threshold, 32 << 20) and mallopt(trim_threshold, 2**31 - 1) and mallopt(top_pad, 256 << 20)):
        return lambda: None

    def restore() -> None:
        mallopt(mmap_threshold, 128 << 10)
        mallopt(trim_threshold, 128 << 10)
        mallopt(top_pad, 128 << 10)
        trim(0)

    return restore


#: click >= 8.2 raises this for a group called without a command (older versions print the help).
_NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())


def error_message(exc: BaseException) -> str:
    """One line describing ``exc`` for the user (its type when it is not one of qasa's own errors)."""
    if isinstance(exc, (QasaError, click.ClickException)):
        text = str(exc)
    elif isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        text = f"{exc.strerror}{where} ({type(exc).__name__}, errno {exc.errno})"
    elif isinstance(exc, ValueError):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split()) or type(exc).__name__


def warning_lines(caught: list[warnings.WarningMessage]) -> list[str]:
    """One line ``warning: ...`` per distinct warning (redacted); numpy's floating-point warnings
    (``overflow encountered in multiply``...), however many, make one line naming the first places."""
    lines: list[str] = []
    numeric: list[str] = []
    for w in caught:
        text = " ".join(str(w.message).split())
        if issubclass(w.category, RuntimeWarning) and "encountered in" in text:
            place = f"{Path(w.filename).name}:{w.lineno}"
            if place not in numeric:
                numeric.append(place)
            continue
        line = f"warning: {redact(text)}"
        if line not in lines:
            lines.append(line)
    if numeric:
        more = f" and {len(numeric) - 3} more" if len(numeric) > 3 else ""
        lines.append(f"warning: overflow or invalid values in floating-point arithmetic ({', '.join(numeric[:3])}"
                     f"{more}); a qubit whose fit they reached is flagged in its quality column")
    return lines


def _fail(message: str) -> int:
    from qasa.redact import redact

    click.echo(f"error: {redact(' '.join(message.split()))}", err=True)
    return 1


def _profile_of(argv: list[str]) -> str | None:
    """The ``--profile`` value on a command line (its token is redacted even if not configured)."""
    for i, arg in enumerate(argv):
        if arg == "--profile" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--profile="):
            return arg.split("=", 1)[1]
    return None


class FiniteFloat(click.ParamType):
    """A finite number within ``[low, high]`` (``low_open``: strictly above ``low``)."""

    name = "number"

    def __init__(self, low: float | None = None, high: float | None = None, low_open: bool = False,
                 unit: str = "") -> None:
        self.low, self.high, self.low_open, self.unit = low, high, low_open, unit

    def describe(self) -> str:
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"<= {self.high:g}")
        return "a finite number" + (" " + " and ".join(parts) if parts else "") + (f" {self.unit}" if self.unit else "")

    def convert(self, value: Any, param, ctx) -> float:
        if isinstance(value, float) and math.isfinite(value) and self._inside(value):
            return value
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number; allowed: {self.describe()}", param, ctx)
        if not math.isfinite(number) or not self._inside(number):
            self.fail(f"{value!r} is outside the allowed range: {self.describe()}", param, ctx)
        return number

    def _inside(self, x: float) -> bool:
        if self.low is not None and (x <= self.low if self.low_open else x < self.low):
            return False
        return self.high is None or x <= self.high


def _ints(text: str | None, what: str = "value") -> list[int] | None:
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        if not parts or any(not p or not p.lstrip("-").isdigit() for p in parts):
            raise ValueError
        return [int(p) for p in parts]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers (e.g. 16,16,4); "
                                 f"give each {what} once, separated by commas") from None


def _floats(text: str | None) -> list[float] | None:
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    try:
        if not parts or any(not p for p in parts):
            raise ValueError
        values = [float(p) for p in parts]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of numbers") from None
    bad = [p for p, v in zip(parts, values) if not math.isfinite(v)]
    if bad:
        raise click.BadParameter(f"{bad[0]!r} in {text!r} is not a finite number")
    return values


def _shape(ctx, param, text: str | None) -> str | None:
    """``--shape``: comma-separated positive integers (the topology checks the count and the size).
    Option callbacks check the text and hand it on unchanged: the commands parse it."""
    values = _ints(text, "dimension")
    if values is not None and any(v < 1 for v in values):
        raise click.BadParameter(f"{text!r}: every dimension must be a positive integer (>= 1)")
    return text


def _h_values(ctx, param, text: str | None) -> str | None:
    _floats(text)
    return text


def _qubits(ctx, param, text: str | None) -> str | None:
    values = _ints(text, "qubit")
    if values is not None and any(v < 0 for v in values):
        raise click.BadParameter(f"{text!r}: qubit labels are non-negative integers")
    return text


def _schedule(text: str | None) -> list[tuple[float, float]] | None:
    """Parse 't,s;t,s;...'."""
    if text is None:
        return None
    try:
        points = [tuple(float(x) for x in p.split(",")) for p in text.replace(" ", "").split(";") if p]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a schedule 't,s;t,s;...'") from None
    if not points:
        raise click.BadParameter(f"{text!r} holds no schedule points 't,s;t,s;...'")
    if any(len(p) != 2 for p in points):
        raise click.BadParameter(f"{text!r}: each point needs two numbers 't,s'")
    if any(not math.isfinite(x) for p in points for x in p):
        raise click.BadParameter(f"{text!r}: every time and value must be a finite number")
    return points


def _schedule_option(ctx, param, text: str | None) -> str | None:
    _schedule(text)
    return text




def backend_options(f: Callable) -> Callable:
    opts = [
        click.option("--backend", default=DEFAULT_BACKEND, show_default=True,
                     type=click.Choice(["emulator", "sa", "mock", "qpu"]),
                     help="emulator (the virtual QPU), sa (exact Gibbs sampling), mock (MockDWaveSampler) or qpu (Leap)."),
        click.option("--topology", "topology_type", default=None,
                     type=click.Choice(["chimera", "pegasus", "zephyr"]),
                     help="Device graph of the software backends [default: the preset's, or pegasus]."),
        click.option("--shape", default=None, callback=_shape, help="Topology shape, e.g. 16 (Pegasus), 16,16,4 (Chimera), 12,4 (Zephyr)."),
        click.option("--solver", default=None,
                     help='QPU solver name, or features as JSON, e.g. \'{"topology__type": "pegasus"}\' (qpu backend).'),
        click.option("--profile", default=None, help="dwave-cloud-client configuration profile (qpu backend)."),
        click.option("--beta", default=5.0, show_default=True, type=FiniteFloat(0.0, low_open=True),
                     help="Inverse temperature of the sa/mock backends (1/h)."),
        click.option("--device-seed", default=None, type=click.IntRange(min=0), help="Seed of the virtual QPU's hidden truth."),
        click.option("--preset", default="advantage4.1", show_default=True,
                     help="Virtual QPU preset: advantage4.1, advantage6.4, advantage2, 2000q."),
        click.option("--physics", default="freezeout", show_default=True, type=click.Choice(["freezeout", "dynamics"]),
                     help="Virtual QPU physics level."),
        click.option("--ideal", is_flag=True,
                     help="Virtual QPU without noise beyond shots (per-programming errors, 1/f flux noise, DAC, h scale)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def protocol_options(h_step: float, reads: int) -> Callable:
    def deco(f: Callable) -> Callable:
        opts = [
            click.option("--h-max", default=1.0, show_default=True, type=FiniteFloat(0.0, low_open=True), help="Largest |h| of the grid (default: the reference h grid ±1 step 0.025)."),
            click.option("--h-step", default=h_step, show_default=True, type=FiniteFloat(0.0, low_open=True), help="Grid step of h."),
            click.option("--h-values", default=None, callback=_h_values, help="Explicit comma-separated h values (overrides the grid)."),
            click.option("--reads", default=reads, show_default=True, type=click.IntRange(min=1), help="Reads per h value."),
            click.option("--reads-per-call", default=1000, show_default=True, type=click.IntRange(min=1), help="Largest reads per call."),
            click.option("--gauges-per-h", default=1, show_default=True, type=click.IntRange(min=1), help="Least gauges (calls) per h value."),
            click.option("--no-gauges", is_flag=True, help="Do not apply spin-reversal gauges."),
            click.option("--order", default="shuffled", show_default=True, type=click.Choice(["shuffled", "sequential"]),
                         help="Run order of the h values within each gauge pass (shuffled: seeded per pass, so "
                              "slow drift does not alias onto h; sequential: h order)."),
            click.option("--annealing-time", default=None, type=FiniteFloat(0.0, low_open=True, unit="µs"),
                         help="Annealing time in µs."),
            click.option("--anneal-schedule", default=None, callback=_schedule_option, help="Anneal schedule 't,s;t,s;...' (µs)."),
            click.option("--h-gain-schedule", default=None, callback=_schedule_option, help="h-gain schedule 't,g;t,g;...' (µs)."),
            click.option("--qubits", default=None, callback=_qubits, help="Comma-separated qubit ids, e.g. 30,31,45 (default: all active)."),
            click.option("--num-qubits", default=None, type=click.IntRange(min=1), help="Assess only the first N active qubits."),
            click.option("--seed", default=None, type=click.IntRange(min=0), help="Seed of gauges and seeded samplers."),
        ]
        for o in reversed(opts):
            f = o(f)
        return f
    return deco


def _solver_option(solver: str | None) -> str | dict | None:
    if solver is not None and solver.lstrip().startswith("{"):
        try:
            return json.loads(solver)
        except json.JSONDecodeError as exc:
            raise click.BadParameter(f"--solver {solver!r} is not valid JSON: {exc}") from None
    return solver


#: The backends each backend-specific option applies to (any other backend refuses it when typed).
_APPLIES = {"beta": ("sa", "mock"), "preset": ("emulator",), "physics": ("emulator",), "device_seed": ("emulator",),
            "ideal": ("emulator",), "solver": ("qpu",), "profile": ("qpu",),
            "topology_type": ("emulator", "sa", "mock"), "shape": ("emulator", "sa", "mock")}


def _backend_kwargs(o: dict[str, Any], name: str, only_given: bool) -> dict[str, Any]:
    """The :func:`qasa.samplers.get_backend` keywords of backend ``name`` set by the options (typed ones only)."""
    applies = {option: name in backends for option, backends in _APPLIES.items()}
    for option, ok in applies.items():     # a typed option the backend would ignore is refused, not dropped
        if not ok and option in o and _given(option) and (option != "ideal" or o[option]):
            flag = "--" + option.replace("_", "-") if option != "topology_type" else "--topology"
            raise click.UsageError(f"{flag} does not apply to the {name} backend (it is an option of "
                                   f"{' and '.join(_APPLIES[option])}); leave it out")
    out: dict[str, Any] = {}
    for option, key in _BACKEND_OPTIONS.items():
        if option == "backend" or option not in o or not applies.get(option, True):
            continue
        if only_given and not _given(option):
            continue
        value = o[option]
        if option == "ideal" and not value:       # a flag: recorded only when set (as before --ideal existed)
            continue
        if option == "shape":
            value = _ints(value)
        elif option == "solver":
            value = _solver_option(value)
        elif option == "device_seed" and value is None and not only_given:
            value = 0                      # the CLI's emulator is seeded (the library's draws a seed)
        out[key] = value
    return out


def _sampler(o: dict[str, Any]):
    from qasa.samplers import get_backend

    return get_backend(o["backend"], **_backend_kwargs(o, o["backend"], only_given=False))


def _protocol(o: dict[str, Any], sampler):
    from qasa.errors import ProtocolError
    from qasa.protocol import Protocol, h_grid

    if o["h_values"] is not None:
        h_values = _floats(o["h_values"])
    else:
        try:
            h_values = h_grid(o["h_max"], o["h_step"])
        except ProtocolError as exc:
            raise click.BadParameter(str(exc), param_hint="'--h-max'/'--h-step'") from None
    qubits = _ints(o["qubits"])
    if o["num_qubits"] is not None:
        qubits = sorted(sampler.nodelist or ())[: o["num_qubits"]]
    return Protocol(h_values=tuple(h_values), reads_per_h=o["reads"], reads_per_call=o["reads_per_call"],
                    gauges_per_h=o["gauges_per_h"], spin_reversal=not o["no_gauges"], order=o["order"],
                    annealing_time=o["annealing_time"], anneal_schedule=_schedule(o["anneal_schedule"]),
                    h_gain_schedule=_schedule(o["h_gain_schedule"]), qubits=qubits, seed=o["seed"])


def _emit(as_json: bool, data: dict[str, Any], text: str) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=1, default=str, allow_nan=False))
    else:
        click.echo(text)


def _plan(o: dict[str, Any], out: str | None, as_json: bool) -> None:
    session = _session(o, out)                     # every check, no call
    table, totals = session.backend.plan(session.protocol)
    qpu = totals["qpu_access_time_s"]
    text = (f"{totals['calls']} calls on {totals['qubits']} qubits, {totals['reads']} reads in all; "
            + (f"estimated QPU access time {qpu:.2f} s ({qpu / 60:.2f} min)" if qpu is not None
               else "no timing model for this sampler (no QPU time)"))
    _emit(as_json, {**totals, "calls_table": table.head(20).to_dict("records")}, text)


#: Protocol fields set by each protocol option (explicit options override a stored protocol on resume).
_PROTOCOL_OPTIONS = {"h_max": "h_values", "h_step": "h_values", "h_values": "h_values", "reads": "reads_per_h",
                     "reads_per_call": "reads_per_call", "gauges_per_h": "gauges_per_h", "no_gauges": "spin_reversal", "order": "order",
                     "annealing_time": "annealing_time", "anneal_schedule": "anneal_schedule",
                     "h_gain_schedule": "h_gain_schedule", "qubits": "qubits", "num_qubits": "qubits", "seed": "seed"}
#: Backend options and the recipe key of :func:`qasa.samplers.get_sampler` each one sets.
_BACKEND_OPTIONS = {"backend": "backend", "topology_type": "topology_type", "shape": "topology_shape",
                    "solver": "solver", "profile": "profile", "beta": "beta", "device_seed": "seed",
                    "preset": "preset", "physics": "physics", "ideal": "ideal"}


def _given(name: str) -> bool:
    """True if option ``name`` was typed on the command line (or set by its environment variable)."""
    ctx = click.get_current_context()
    source = ctx.get_parameter_source(name)
    return source is not None and source not in (click.core.ParameterSource.DEFAULT,
                                                 click.core.ParameterSource.DEFAULT_MAP)


def _session(o: dict[str, Any], out: str | None, add_reads: int = 0, flux_biases: str | None = None):
    """The session of OUT: typed options over the stored recipe and protocol (:class:`qasa.session.Session`);
    ``--flux-biases`` adds a shim's flux biases to the protocol (stored or new) and resolves it again."""
    from qasa.session import Session

    typed = sorted({_PROTOCOL_OPTIONS[k] for k in _PROTOCOL_OPTIONS if k in o and _given(k)})
    session = Session.open(out, o["backend"] if _given("backend") else None,
                           options=lambda name: _backend_kwargs(o, name, only_given=True),
                           defaults=lambda name: _backend_kwargs(o, name, only_given=False),
                           default=lambda backend: _protocol(o, backend), typed=typed, add_reads=add_reads)
    if flux_biases is not None:
        session.requested = _with_flux_biases(session.requested, session.backend, flux_biases)
        session.resolve()
    return session


def _progress(quiet: bool, label: str = "calls") -> Callable[[int, int], None] | None:
    """A progress bar on a terminal; none with --quiet or when stderr is not a terminal (click would
    print its bare label there: a stray 'calls' line in a log)."""
    if quiet or not sys.stderr.isatty():
        return None
    state: dict[str, Any] = {"bar": None}

    def progress(done: int, total: int) -> None:
        if state["bar"] is None:
            if done == total:          # nothing to do: no bar
                return
            state["bar"] = click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True)
            state["bar"].__enter__()
            state["bar"].update(done)
        else:
            state["bar"].update(done - state["bar"].pos)
        if done == total:
            state["bar"].__exit__(None, None, None)
    return progress


def _with_warnings(quiet: bool, fn: Callable[[], Any]) -> Any:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        result = fn()
    if not quiet:
        for line in warning_lines(caught):
            click.echo(line, err=True)
    return result


@click.group(cls=_Group)
@click.version_option(package_name="qasa")
def main() -> None:
    """qasa: Quantum Annealing Single-qubit Assessment of every qubit of a quantum annealer."""


@main.command()
@backend_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(as_json: bool, **o: Any) -> None:
    """Describe a sampler/device (no sampling, no QPU time)."""
    from qasa.samplers import device_info

    d = device_info(_sampler(o))
    short = {k: v for k, v in d.items() if k not in ("nodelist", "edgelist")}
    short["num_couplers"] = len(d["edgelist"]) if d["edgelist"] is not None else None
    lines = [f"{k}: {v}" for k, v in short.items()]
    _emit(as_json, short, "\n".join(lines))


@main.command("run")
@click.argument("out", type=click.Path(file_okay=False))
@backend_options
@protocol_options(h_step=0.025, reads=10_000)
@click.option("--keep-samples", default=0, show_default=True, type=click.IntRange(min=0),
              help="Also keep up to N raw reads per call (outcome correlations).")
@click.option("--max-qpu-seconds", default=None, type=FiniteFloat(0.0, low_open=True, unit="s"), envvar="QASA_MAX_QPU_SECONDS",
              help="QPU-time budget of the dataset [env QASA_MAX_QPU_SECONDS].")
@click.option("--retries", default=3, show_default=True, type=click.IntRange(0, MAX_RETRIES),
              help="Retries of a call after a transient error.")
@click.option("--call-timeout", default=600.0, show_default=True, type=FiniteFloat(0.0, low_open=True, unit="s"),
              help="Seconds a Leap problem may take before its answer is fetched again by its id.")
@click.option("--in-flight", default=50, show_default=True, type=click.IntRange(1, MAX_IN_FLIGHT),
              help="Calls submitted at once to a Leap solver.")
@click.option("--add-reads", default=0, show_default=True, type=click.IntRange(min=0),
              help="Extend a finished dataset by N more reads per h (whole extra gauges).")
@click.option("--dry-run", is_flag=True, help="Only print the plan and its estimated QPU time.")
@click.option("--flux-biases", "flux_biases", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Apply a shim: flux_biases.json from `qasa shim` (sent with every call).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (JSON on stdout).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run_cmd(out: str, as_json: bool, quiet: bool, keep_samples: int, max_qpu_seconds: float | None,
            retries: int, call_timeout: float, in_flight: int, add_reads: int, dry_run: bool,
            flux_biases: str | None, **o: Any) -> None:
    """Collect counts into dataset directory OUT.

    Re-running resumes: `qasa run OUT` alone continues the stored protocol on the stored backend and
    device; an option typed that differs from what OUT was collected with is refused, naming it.

    The default protocol is the reference h grid of the QASA paper (±1 step 0.025, 81 values) with
    10 000 reads per h, not the reference collection script's defaults (±2, 100 000 reads, 1 µs, no
    gauges; `qasa.Protocol.reference_script()` in Python).
    """
    from qasa.runner import collect

    if dry_run:
        _plan(o, out, as_json)
        return
    _refuse_a_bare_directory(out, o)
    session = _session(o, out, add_reads, flux_biases)
    already = session.finished
    ds = _with_warnings(quiet or as_json, lambda: collect(
        session, progress=_progress(quiet or as_json), keep_samples=keep_samples,
        max_qpu_seconds=max_qpu_seconds, retries=retries, in_flight=in_flight, call_timeout=call_timeout))
    totals = ds.totals()
    data = {"dataset": str(out), "calls": len(ds.calls), "qubits": len(totals["qubits"]), "reads": totals["reads"],
            "qpu_access_time_total_us": ds.metadata.get("qpu_access_time_total_us"),
            "already_finished": already}
    text = f"dataset {out}: {data['calls']} calls, {data['qubits']} qubits, {data['reads']} qubit-reads"
    if already:
        more = ("`qasa assess DIR --design adaptive --target ...` continues an adaptive assessment; --add-reads "
                "would extend only its pilot" if ds.metadata.get("adaptive") else "--add-reads N extends it")
        text = f"{out} is already complete (nothing to run; {more})\n" + text
    _emit(as_json, data, text)


def _refuse_a_bare_directory(out: str, o: dict[str, Any]) -> None:
    """``qasa run DIR`` alone resumes DIR's dataset; on a directory that exists without one (a run killed
    before it wrote its metadata) it would start the default protocol instead of the one asked for then:
    refused, unless backend or protocol options say what to start."""
    from qasa.errors import DatasetError
    from qasa.store import DatasetStore

    path = Path(out)
    if path.is_dir() and not DatasetStore(path).exists and not any(_given(k) for k in o):
        raise DatasetError(f"{out} exists but holds no qasa dataset (a run killed before it wrote its metadata?): "
                           "remove it or give the options to start one")


def _fit_text(fits, comparison) -> str:
    data = fits.summary()
    lines = [f"model {fits.model.name}: {len(fits)} qubits, quality {data['quality']}"]
    for p in fits.model.params:
        s = data[p]
        if s:
            lines.append(f"  {p:>8}: median {s['median']:.4g}  IQR [{s['q25']:.4g}, {s['q75']:.4g}]")
    if data.get("sigma_call"):
        s = data["sigma_call"]
        lines.append(f"  sigma_call: median {s['median']:.4g}  IQR [{s['q25']:.4g}, {s['q75']:.4g}]  "
                     f"({s['qubits']} good qubits; spread of the field between calls, h)")
    sf = data.get("sigma_field")
    if sf and sf.get("sigma_field") == sf.get("sigma_field"):          # (NaN: not estimable)
        shown = ("given" if sf.get("given") else
                 f"[{sf['sigma_field_lo']:.2g}, {sf['sigma_field_hi']:.2g}], {sf.get('outlying_qubits', 0)} outlying qubits")
        lines.append(f"  sigma_field: {sf['sigma_field']:.2g} h ({shown}; the field error shared by the calls at one "
                     "programmed value, one for the device)")
    if comparison is not None:
        dev = comparison[1]
        lines.append("model comparison (ΔAIC: total AIC minus the best model's; qubits best fitted):")
        totals = [v["aic_total"] for v in dev["models"].values() if v["aic_total"] is not None]
        best = min(totals) if totals else None
        for m, v in dev["models"].items():
            aic = "n/a" if v["aic_total"] is None else f"{v['aic_total'] - best:,.1f}".replace(",", " ")
            lines.append(f"  {m:>15}: ΔAIC {aic}; best for {v['best_for_qubits']} qubits")
        for t in dev["tests"]:          # a p-value below double precision is shown as a bound, never "0"
            p = t["pvalue"]
            shown = "n/a" if p is None else "< 1e-300" if p < 1e-300 else f"{p:.3g}"
            lines.append(f"  LR {t['small']} vs {t['big']}: p {'= ' if not shown.startswith('<') else ''}{shown}; "
                         f"{t['qubits_rejecting_small_at_0.01']} qubits reject {t['small']} at 0.01")
        lines.append(f"  preferred: {dev['preferred']}" if dev["preferred"] is not None
                     else "  preferred: none (no qubit was fitted by every model)")
    return "\n".join(lines)


@main.command("fit")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--model", default="qasa", show_default=True,
              help=f"{', '.join(MODELS)} (optionally +readout).")
@click.option("--compare", is_flag=True, help="Also fit every model and compare them.")
@click.option("--bootstrap", default=0, show_default=True, type=click.IntRange(0, MAX_BOOTSTRAP),
              help=f"Parametric-bootstrap replicates (at most {MAX_BOOTSTRAP}).")
@click.option("--seed", default=None, type=click.IntRange(min=0), help="Seed of the bootstrap.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (JSON on stdout).")
def fit_cmd(dataset: str, model: str, compare: bool, bootstrap: int, seed: int | None, as_json: bool) -> None:
    """Fit a response model to every qubit of DATASET (results cached in DATASET/fits/)."""
    from qasa import pipeline
    from qasa.dataset import json_safe
    from qasa.fitting import compare as compare_models
    from qasa.store import DatasetStore

    ds = pipeline.load(dataset)
    store = DatasetStore(dataset)
    kwargs = {"bootstrap": bootstrap, "seed": seed} if bootstrap else {}
    fits = pipeline.fit(ds, model, store=store, **kwargs)
    comparison = None
    if compare:
        tables = pipeline.fit_models(ds, compared_models(), store=store)
        tables[fits.model.name] = fits
        comparison = compare_models(tables)
    data = fits.summary()
    if comparison is not None:
        data["comparison"] = comparison[1]
    _emit(as_json, json_safe(data), _fit_text(fits, comparison))


@main.command()
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--model", default="qasa", show_default=True,
              help=f"Response model to fit and report: {', '.join(MODELS)}.")
@click.option("--out", default=None, help="Report directory (default DATASET/report).")
@click.option("--compare", is_flag=True, help="Include model comparison.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (JSON on stdout).")
def report(dataset: str, model: str, out: str | None, compare: bool, as_json: bool) -> None:
    """Write the HTML report and summary.json of DATASET (fits reused only if made from its counts)."""
    from qasa import pipeline

    result = pipeline.report(dataset, model, out=out, compare=compare)
    _emit(as_json, result.summary, _summary_text(result.summary, result.report_dir))


def _summary_text(summary: dict[str, Any], where: Path) -> str:
    f = summary["fit"]
    lines = [f"device {summary['device']['solver']}: {summary['data']['qubits']} qubits, "
             f"{summary['data']['h_values']} h values, {summary['data']['reads_total']} qubit-reads",
             f"fit ({f['model']}): quality {f['quality']}"]
    coll = summary.get("collection") or {}
    if coll.get("partial"):
        lines.insert(1, f"PARTIAL dataset: {coll['done']} of {coll['planned']} planned calls (interrupted, stopped by "
                        "its budget, or still being written); `qasa run DIR` resumes it")
    rows = {r.get("param"): r for r in summary.get("summary") or []}
    for p, r in rows.items():         # every parameter of the model, in its order
        if r and r.get("median") is not None:        # rounded to two digits of the median's standard error
            se = r.get("median_se")
            q = (lambda v: format_value(v, se)) if se else (lambda v: f"{v:.4g}")
            lines.append(f"  {p:>10}: median {format_value(r['median'], se, with_error=True)}  "
                         f"IQR [{q(r['q25'])}, {q(r['q75'])}]  ({r.get('n')} good qubits)")
    pooled = summary.get("effective_temperature") or summary.get("pooled_gibbs")
    if pooled and pooled.get("T_eff") is not None:
        which = {"measurement": " (measurement error)", "population": " (population error)"}.get(pooled.get("error"), "")
        lines.append(f"effective temperature T_eff = "
                     f"{format_value(pooled['T_eff'], pooled.get('T_eff_stderr'), with_error=True)}{which}, units of h")
    lines.append(f"report: {where / 'index.html'}")
    return "\n".join(lines)


@main.command()
@click.argument("out", type=click.Path(file_okay=False), default="qasa-run")
@backend_options
@protocol_options(h_step=0.025, reads=4000)
@click.option("--model", default="qasa", show_default=True,
              help=f"Response model to fit and report: {', '.join(MODELS)}.")
@click.option("--compare", is_flag=True, help="Include model comparison in the report.")
@click.option("--max-qpu-seconds", default=None, type=FiniteFloat(0.0, low_open=True, unit="s"), envvar="QASA_MAX_QPU_SECONDS",
              help="QPU-time budget of the dataset [env QASA_MAX_QPU_SECONDS].")
@click.option("--design", "design_name", default="grid", show_default=True, type=click.Choice(["grid", "adaptive"]),
              help="grid: the protocol as given; adaptive: pilot, then per-qubit optimal rounds until --target holds.")
@click.option("--target", default=None, callback=lambda ctx, param, v: _target(v),
              help="Adaptive design: 95% interval half-widths, e.g. beta=1%,b=0.003,eta=0.01 (% = relative).")
@click.option("--flux-biases", "flux_biases", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Apply a shim: flux_biases.json from `qasa shim` (sent with every call).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (JSON on stdout).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def assess(out: str, model: str, compare: bool, max_qpu_seconds: float | None, as_json: bool, quiet: bool,
           design_name: str, target: dict[str, Any] | None, flux_biases: str | None, **o: Any) -> None:
    """Run, fit and report in one go (default: the built-in virtual QPU, no account needed).

    The default device is an Advantage_system4.1-like virtual QPU with known per-qubit truth; the
    report compares what the fit recovers with it. The default protocol is the reference h grid
    (±1 step 0.025, 81 values) with 4000 reads per h; `qasa run` defaults to 10 000. Re-running on
    OUT resumes with the stored settings.
    """
    from qasa import pipeline

    session = _session(o, out, flux_biases=flux_biases)
    sampler, protocol = session.backend, session.protocol
    extra: dict[str, Any] = {}
    if design_name == "adaptive":
        from qasa.adaptive import pilot_from

        if target is None:
            raise click.BadParameter("--design adaptive needs --target, e.g. beta=1%,b=0.003,eta=0.01",
                                     param_hint="--target")
        protocol = pilot_from(protocol, sampler)
        extra = {"design": "adaptive", "target": target}
    elif target is not None:
        raise click.BadParameter("--target applies to --design adaptive only", param_hint="--target")
    result = _with_warnings(quiet or as_json, lambda: pipeline.assess(
        sampler, out, protocol, model=model, compare=compare, max_qpu_seconds=max_qpu_seconds,
        progress=_progress(quiet or as_json), **extra))
    summary, text = result.summary, _summary_text(result.summary, result.report_dir)
    if design_name == "adaptive":
        from qasa.store import DatasetStore

        adaptive = (DatasetStore(out).metadata().get("adaptive") or {}).get("result") or {}
        summary = {**summary, "adaptive": adaptive}
        text += (f"\nadaptive design: stopped on {adaptive.get('stopped')} after {adaptive.get('rounds')} rounds; "
                 f"{adaptive.get('fraction_met', 0):.1%} of qubits within target; "
                 f"{adaptive.get('reads_per_qubit')} reads per qubit in {adaptive.get('calls')} calls; "
                 + (f"QPU access time {adaptive['qpu_access_time_s']:.2f} s" if adaptive.get("qpu_access_time_s")
                    is not None else "no QPU access time recorded (the sampler reports none)"))
        if adaptive.get("stopped") == "infeasible":
            need = adaptive.get("predicted_reads_per_qubit")
            text += (f"\nthe target is out of reach: it needs {'unboundedly many' if need is None else f'{need:.3g}'} "
                     f"reads per qubit (feasibility bound {adaptive.get('max_reads_per_qubit'):.3g})"
                     + (f"; the h DAC's per-field error σ_field = {adaptive['sigma_field']:.3g} caps what the reads at "
                        "each programmed field can tell" if adaptive.get("sigma_field") else "")
                     + "; relax the target")
    _emit(as_json, summary, text)


def _g(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


def _with_flux_biases(protocol, sampler, path: str | None):
    """The protocol with a shim's flux biases as a sampler parameter of every call (``--flux-biases``)."""
    if path is None:
        return protocol
    from qasa.backend import as_backend
    from qasa.shim import load_flux_biases

    backend = as_backend(sampler)
    values = load_flux_biases(path, backend.properties.get("num_qubits"), backend)
    return protocol.replace(sampler_params={**protocol.sampler_params, "flux_biases": values})


@main.command("shim")
@click.argument("out", type=click.Path(file_okay=False))
@backend_options
@click.option("--reads-per-qubit", default=20_480, show_default=True, type=int,
              help="Read budget: reads each qubit takes part in, in all (at least 2: one antithetic pair of "
                   "calls; a qubit whose bias is not resolved at the budget keeps flux 0).")
@click.option("--qubits", default=None, callback=_qubits, help="Comma-separated qubit ids, e.g. 30,31,45 (default: all active).")
@click.option("--num-qubits", default=None, type=click.IntRange(min=1), help="Shim only the first N active qubits.")
@click.option("--target", default=None, type=FiniteFloat(0.0, low_open=True),
              help="Stop once every responding qubit's residual 95% half-width is within this (units of h).")
@click.option("--max-qpu-seconds", default=None, type=FiniteFloat(0.0, low_open=True, unit="s"), envvar="QASA_MAX_QPU_SECONDS",
              help="QPU-time budget of the shim [env QASA_MAX_QPU_SECONDS].")
@click.option("--annealing-time", default=None, type=FiniteFloat(0.0, low_open=True, unit="µs"), help="Annealing time in µs.")
@click.option("--seed", default=None, type=click.IntRange(min=0), help="Seed of gauges and dithers.")
@click.option("--offsets", default="flux", show_default=True, type=click.Choice(["flux", "h"]),
              help="What the shim sets: flux biases, or per-qubit h offsets (for a sampler without flux_biases).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (JSON on stdout).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def shim_cmd(out: str, reads_per_qubit: int, qubits: str | None, num_qubits: int | None, target: float | None, max_qpu_seconds: float | None,
             annealing_time: float | None, seed: int | None, offsets: str, as_json: bool, quiet: bool,
             **o: Any) -> None:
    """Find the flux biases that cancel every qubit's static bias; write OUT/flux_biases.json.

    Model-based and pooled (every round's reads in one likelihood per qubit, the flux→field conversion
    learned per qubit); journaled per call, so re-running OUT resumes. Apply the result to any later run
    with `qasa run/assess --flux-biases OUT/flux_biases.json`. With `--offsets h` (a sampler without
    flux_biases) it writes OUT/h_offsets.json instead: one h offset per qubit id, to add to a problem's h.
    """
    from qasa.session import open_backend
    from qasa.shim import shim

    # typed options over the stored recipe of OUT (a resumed shim runs on the backend it started on)
    sampler = open_backend(out, o["backend"] if _given("backend") else None,
                           options=lambda name: _backend_kwargs(o, name, only_given=True),
                           defaults=lambda name: _backend_kwargs(o, name, only_given=False))
    chosen = _ints(qubits)
    if num_qubits is not None:
        if chosen is not None:
            raise click.UsageError("--qubits and --num-qubits exclude each other")
        chosen = sorted(getattr(sampler, "nodelist", None) or ())[:num_qubits]
    result = _with_warnings(quiet or as_json, lambda: shim(
        sampler, out, reads_per_qubit=reads_per_qubit, qubits=chosen, target=target,
        max_qpu_seconds=max_qpu_seconds, seed=seed, annealing_time=annealing_time, offsets=offsets,
        progress=_progress(quiet or as_json)))
    s = result.summary()
    bad = result.table[~result.table["status"].isin(["ok"])]
    kind = "flux biases" if offsets == "flux" else "h offsets"
    unresolved = s["status"].get("unresolved", 0)
    bound = "; an upper bound: between-call scatter not identified" if s.get("bias_rms_upper_bound") else ""
    text = (f"shim {out}: {s['responding']} of {s['qubits']} qubits shimmed with {s['reads_per_qubit']} reads each "
            f"in {s['rounds']} rounds (stopped: {s['stopped']})"
            + (f"; {unresolved} responding qubits left at 0: bias not resolved at this budget" if unresolved else "")
            + f"; rms bias before {_g(s['bias_rms'])} (over the {s['responding'] + unresolved} responding qubits, "
            f"the estimates' noise removed{bound}), "
            f"residual 95% half-width rms {_g(s['residual_half_width_rms'])} (max {_g(s['residual_half_width_max'])})"
            f"\nnot removable by a static shim: between-call scatter sigma_call {_g(s['sigma_call_median'])} "
            f"(median), slow flux noise over the run {_g(s['sigma_slow_median'])} (in the interval)"
            f"\n{kind}: {s['flux_biases' if offsets == 'flux' else 'h_offsets']}")
    if not quiet:
        text += _reasons_by_kind(bad, str(Path(out) / "shim" / "table.csv"))
    _emit(as_json, s, text)


def _reasons_by_kind(bad: Any, table: str, examples: int = 10) -> str:
    """The qubits not shimmed, counted per status with up to ``examples`` qubits each (their reasons are in
    OUT/shim/table.csv), instead of a line per qubit."""
    text = ""
    for status, grp in bad.groupby("status", sort=False):
        qs = ", ".join(str(int(q)) for q in grp["qubit"][:examples]) + (", …" if len(grp) > examples else "")
        first = str(grp["reason"].iloc[0])
        text += f"\n{len(grp)} qubits {status} (e.g. {qs}); e.g. qubit {int(grp['qubit'].iloc[0])}: {first}"
    return text + (f"\nper-qubit reasons: {table}" if len(bad) else "")


def _target(text: str | None) -> dict[str, Any] | None:
    """Parse --target (one clear error naming the entry and the allowed form)."""
    if text is None:
        return None
    from qasa.design import parse_target

    try:
        return parse_target(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--target") from None


@main.command("temperature")
@click.argument("out", type=click.Path(file_okay=False), required=False)
@backend_options
@click.option("--reads", "num_reads", default=1000, show_default=True, type=click.IntRange(1, 100_000),
              help="Reads per programming.")
@click.option("--programmings", default=2, show_default=True, type=click.IntRange(1, 10),
              help="1: D-Wave's design exactly; 2: one spin-reversal pair (a static bias cancels).")
@click.option("--seed", default=None, type=click.IntRange(min=0), help="Seed of the random fields.")
@click.option("--max-qpu-seconds", default=None, type=FiniteFloat(0.0, low_open=True, unit="s"), envvar="QASA_MAX_QPU_SECONDS",
              help="QPU-time budget [env QASA_MAX_QPU_SECONDS].")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def temperature(out: str | None, num_reads: int, programmings: int, seed: int | None, max_qpu_seconds: float | None,
                as_json: bool, **o: Any) -> None:
    """Quick effective temperature: D-Wave's fast_effective_temperature design (every qubit its own
    random field in |h| <= 1/6.1), spin-reversal symmetrized, through qasa's store and estimator.
    OUT (optional) keeps the dataset."""
    from qasa.dataset import json_safe
    from qasa.temperature import quick

    e = quick(_sampler(o), out, num_reads=num_reads, programmings=programmings, seed=seed,
              max_qpu_seconds=max_qpu_seconds)
    d = json_safe(e.to_dict())
    text = (f"T_eff = {format_value(e.T_eff, e.T_eff_measurement_stderr, with_error=True)} "
            f"(measurement error, {e.measurement_df} df: {programmings} programming(s)); "
            f"population error ± {format_value(e.T_eff_population_stderr, e.T_eff_population_stderr)}; "
            f"{e.qubits} qubits x {num_reads} reads x {programmings} programming(s); units of h")
    _emit(as_json, d, text)


@main.command("plan")
@backend_options
@protocol_options(h_step=0.025, reads=10_000)
@click.option("--design", "design_name", default="grid", show_default=True, type=click.Choice(["grid", "adaptive"]),
              help="adaptive: the expected QPU time of the adaptive plan beside the reference grid's for --target.")
@click.option("--target", default=None, callback=lambda ctx, param, v: _target(v),
              help="Adaptive design: 95% interval half-widths, e.g. beta=1%,b=0.003,eta=0.01 (% = relative).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (JSON on stdout).")
def plan_cmd(as_json: bool, design_name: str, target: dict[str, Any] | None, **o: Any) -> None:
    """Check a protocol against the sampler and estimate its QPU time, without submitting anything."""
    if design_name == "grid":
        if target is not None:
            raise click.BadParameter("--target applies to --design adaptive only", param_hint="--target")
        _plan(o, None, as_json)
        return
    if target is None:
        raise click.BadParameter("--design adaptive needs --target, e.g. beta=1%,b=0.003,eta=0.01",
                                 param_hint="--target")
    from qasa.adaptive import expected_cost, pilot_from

    session = _session(o, None)
    sampler, protocol = session.backend, session.protocol
    cost = expected_cost(sampler, target, protocol=pilot_from(protocol, sampler))

    def line(name: str, part: dict[str, Any]) -> str:
        qpu = part["qpu_access_time_s"]
        if part["calls"] is None:
            return f"  {name:>9}: never meets the target"
        shown = f"{qpu:.1f} s ({qpu / 60:.1f} min)" if qpu is not None else "no timing model"
        return f"  {name:>9}: {part['reads_per_qubit']} reads per qubit in {part['calls']} calls; QPU access time {shown}"

    theta = ", ".join(f"{k}={v:g}" for k, v in cost["theta"].items() if k in ("beta", "b", "gamma", "eta"))
    text = "\n".join([f"expected cost of target {','.join(f'{k}={v}' for k, v in target.items())} on {cost['qubits']} qubits "
                      f"(Cramér–Rao bound at typical parameters {theta}; qubits worse than typical need more):",
                      line("reference", cost["reference"]), line("adaptive", cost["adaptive"]),
                      f"  reference/adaptive = {cost['ratio']:.2f}" if cost["ratio"] is not None
                      else "  reference/adaptive: the reference grid never meets it"])
    _emit(as_json, cost, text)


@main.command()
@click.argument("datasets", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--model", default="qasa", show_default=True,
              help=f"Response model to fit and report: {', '.join(MODELS)}.")
@click.option("--param", default="beta", show_default=True, help="Parameter whose trend is drawn.")
@click.option("--out", default="qasa-comparison", show_default=True, help="Output directory.")
@click.option("--allow-different-devices", is_flag=True, help="Compare datasets of different devices/topologies.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (JSON on stdout).")
def compare(datasets: tuple[str, ...], model: str, param: str, out: str, allow_different_devices: bool,
            as_json: bool) -> None:
    """Compare assessments of the same device (e.g. two dates, or several annealing times)."""
    from qasa import pipeline

    summary = pipeline.compare_runs(datasets, model, out=out, allow_different_devices=allow_different_devices)
    lines = []
    for pair, values in summary["pairs"].items():
        lines.append(f"{pair}: {values['qubits']} qubits good in both")
        for p, v in values.items():
            if isinstance(v, dict) and v.get("median_change") is not None:
                lines.append(f"  {p:>6}: median change {v['median_change']:.4g} ± {v['median_change_se']:.2g}; "
                             f"{v['changed']} qubits changed (FDR 0.05)")
    if "annealing_time_trend" in summary and param in summary["annealing_time_trend"]:
        t = summary["annealing_time_trend"][param]
        lines.append(f"trend of {param}: median slope {t['median_slope_per_decade']:.4g} per decade of annealing time, "
                     f"{t['qubits_increasing']}/{t['qubits']} qubits increasing (sign test p = {t['sign_test_p']:.3g})")
    lines.append(f"report: {Path(out) / 'comparison.html'}")
    _emit(as_json, summary, "\n".join(lines))


@main.command()
@click.option("--out", default="qasa-analogues", show_default=True, help="Output directory.")
@click.option("--steps", default=1000, show_default=True, type=click.IntRange(min=1), help="SGD steps of the noisy quadratic model.")
@click.option("--sweeps", default=64, show_default=True, type=click.IntRange(min=1), help="Simulated-annealing sweeps.")
@click.option("--annealing-time", default=20.0, show_default=True, type=FiniteFloat(0.0, low_open=True, unit="µs"),
              help="QPU anneal duration (µs).")
@click.option("--backend", default="emulator", show_default=True, type=click.Choice(["emulator", "qpu"]),
              help="QPU system: emulator or qpu.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (JSON on stdout).")
def analogues(out: str, steps: int, sweeps: int, annealing_time: float, backend: str, as_json: bool) -> None:
    """Run every schedule shape on SGD, simulated annealing and the (virtual) QPU, side by side."""
    from qasa import analogues as an
    from qasa.dataset import json_safe
    from qasa.report import build_analogues_report

    sampler = None
    if backend != "emulator":
        from qasa.samplers import get_sampler

        sampler = get_sampler(backend)
    nqm = an.nqm_study(steps=steps)
    sa = an.sa_study(num_sweeps=sweeps)
    qpu = an.qpu_study(sampler=sampler, annealing_time=annealing_time)
    table = build_analogues_report(nqm, sa, qpu, out)
    cols = ["shape", "sgd_final_loss", "sgd_temperature", "sa_ground_state_probability", "sa_temperature",
            "qpu_beta", "qpu_temperature"]
    text = table[[c for c in cols if c in table]].to_string(index=False, float_format=lambda v: f"{v:.4g}")
    _emit(as_json, {"combined": json_safe(table.to_dict("records")), "report": str(Path(out) / "analogues.html")},
          text + f"\nreport: {Path(out) / 'analogues.html'}")


@main.command("import")
@click.argument("spin_table", type=click.Path(exists=True, dir_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--topology", "topology_type", default=None, type=click.Choice(["chimera", "pegasus", "zephyr"]),
              help="Topology of the device the table came from (for maps).")
@click.option("--shape", default=None, callback=_shape, help="Topology shape.")
def import_cmd(spin_table: str, out: str, topology_type: str | None, shape: str | None) -> None:
    """Import a reference spin_table.csv into dataset directory OUT."""
    from qasa.dataset import Dataset
    from qasa.errors import DatasetError

    if (Path(out) / "metadata.json").exists():
        raise DatasetError(f"{out} already holds a dataset; choose another directory")
    if shape is not None and topology_type is None:
        raise click.BadParameter(f"--shape {shape} needs --topology (chimera, pegasus or zephyr)", param_hint="'--shape'")
    device = {"topology_type": topology_type, "topology_shape": _ints(shape)} if topology_type else None
    ds = Dataset.from_spin_table(spin_table, device)
    ds.save(out)
    click.echo(f"imported {spin_table}: {ds.counts['qubit'].nunique()} qubits, {len(ds.calls)} h values → {out}")


@main.command("export")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.argument("spin_table", type=click.Path(dir_okay=False))
def export_cmd(dataset: str, spin_table: str) -> None:
    """Export DATASET's counts as a reference spin_table.csv."""
    from qasa import pipeline

    _with_warnings(False, lambda: pipeline.load(dataset).to_spin_table(spin_table))
    click.echo(f"wrote {spin_table}")


if __name__ == "__main__":  # pragma: no cover
    main()
