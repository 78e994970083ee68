"""The virtual QPU: a D-Wave-like sampler with known per-qubit truth, and its single-qubit physics.

Layout (imports point down only: this package uses :mod:`qasa.topology`, :mod:`qasa.models`,
:mod:`qasa.cost` and :mod:`qasa.protocol`, never the fitter, runner or report it is used to test):

- :mod:`qasa.virtual.physics` — A(s)/B(s) schedules, units, freeze-out, single-qubit dynamics;
- :mod:`qasa.virtual.noise` — noise beyond shots: per-programming errors, 1/f flux noise, DAC, h scale;
- :mod:`qasa.virtual.qpu` — :class:`VirtualQPU`, its presets and its hidden truth.
"""

from qasa.virtual.qpu import PRESETS, STRUCTURES, Preset, VirtualQPU, device_field

__all__ = ["VirtualQPU", "Preset", "PRESETS", "STRUCTURES", "device_field"]
