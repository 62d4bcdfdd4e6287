"""Coulomb (EFM / PFGM) field: the fused CPU kernel against the baselines, one pytest-benchmark
group per published shape (EFM-CIFAR, PFGM, toy). See cases.py for the inputs and
runner.py for what is recorded."""

import pytest
from baselines import COULOMB_IMPLEMENTATIONS
from cases import case_ids


@pytest.mark.parametrize("impl", list(COULOMB_IMPLEMENTATIONS))
@pytest.mark.parametrize("case", case_ids("coulomb"))
def test_coulomb_field(benchmark, bench, case, impl):
    bench.run(benchmark, "coulomb", case, impl)
