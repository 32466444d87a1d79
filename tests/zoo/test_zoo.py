"""Every torchvision classification CNN up to 150M parameters, pruned 50% by L1 as a user
would: eval and train forward still run with the output shape unchanged, FLOPs and
parameters fell, CostModel predicts the counted cost, and the pruned model computes what
the original does with the removed channels zeroed. One subprocess per model, with a
time limit, so a native crash or a hang fails that model alone."""

import pytest

from benchmarks.zoo import models, run_isolated

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", models())
def test_torchvision_cnn_prunes(name):
    row = run_isolated(name, "blendprune", timeout=300)
    assert row["status"] == "ok", row["error"]
    assert row["macs_after"] < row["macs_before"] and row["params_after"] < row["params_before"]
    assert row["cost_exact"] and row["output_ok"] and row["train_ok"] is not False
