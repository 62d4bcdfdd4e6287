"""String (IFM) field: the fused CPU kernel against the baselines, one pytest-benchmark group per
published shape (toy, CIFAR, W2S, CelebA-64). See cases.py for the inputs and runner.py
for what is recorded."""

import pytest
from baselines import STRING_IMPLEMENTATIONS
from cases import case_ids


@pytest.mark.parametrize("impl", list(STRING_IMPLEMENTATIONS))
@pytest.mark.parametrize("case", case_ids("string"))
def test_string_field(benchmark, bench, case, impl):
    bench.run(benchmark, "string", case, impl)
