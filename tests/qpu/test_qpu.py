"""Real-QPU tests: they spend a little QPU time (about 1 s) and skip themselves without Leap credentials.

Run with ``pytest tests/qpu -m qpu`` after ``dwave config create``.
"""

import pytest

import qasa
import qasa.report
from qasa.errors import CredentialsError
from qasa.samplers import check_credentials

try:
    check_credentials()
    HAVE_TOKEN = True
except CredentialsError:
    HAVE_TOKEN = False

pytestmark = [pytest.mark.qpu, pytest.mark.skipif(not HAVE_TOKEN, reason="no Leap credentials configured")]


def test_pooled_qasa_temperature_agrees_with_fast_effective_temperature(tmp_path):
    from dwave.system.temperatures import fast_effective_temperature

    sampler = qasa.get_sampler("qpu")
    protocol = qasa.Protocol.grid(0.3, 0.05, reads_per_h=200, reads_per_call=100, seed=1,
                                  qubits=tuple(sampler.nodelist[:200]))
    ds = qasa.run(protocol, sampler, tmp_path / "qpu")
    pooled = qasa.report.pooled_temperature(ds)
    t_fast, _ = fast_effective_temperature(sampler, num_reads=1000, seed=1, nodelist=sampler.nodelist[:200])
    assert pooled["T_eff"] == pytest.approx(t_fast, rel=0.15)
