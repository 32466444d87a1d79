"""`blendprune export --format onnx|safetensors`: the exported model computes what the
torch model does, is smaller with the params, and the portable form needs no pickle."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pruning import GroupMap, apply_plan, create_model, save_pruned
from search.export_formats import export

from ..pruning.test_surgery import random_plan

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    torch.manual_seed(0)
    base = create_model("resnet20", 10, 3).eval()
    x = torch.zeros(1, 3, 32, 32)
    gm = GroupMap(base, x)
    plan = random_plan(gm, 0.6, seed=1)
    model = apply_plan(base, gm, plan).eval()
    path = tmp_path_factory.mktemp("m") / "model.pt"
    save_pruned(model, path, arch="resnet20", plan=plan, num_classes=10,
                input_shape=(1, 3, 32, 32), extra={"mean": [0.5] * 3, "std": [0.25] * 3})
    return model, path


def test_onnx_matches_torch_and_shrinks_with_the_params(pruned, tmp_path):
    import onnxruntime as ort

    model, src = pruned
    lines = export(src, "onnx", tmp_path / "m.onnx")
    assert "onnxruntime matches torch" in lines[1] and "latency" in lines[2]
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 32, 32)  # another batch size than the export's
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0],
                                   model(x).numpy(), atol=1e-4, rtol=0)
    size, params = (float(v) for v in
                    __import__("re").search(r"([\d.]+)x the unpruned arch's ONNX .*params "
                                            r"([\d.]+)x", lines[0]).groups())
    # the file shrinks as the params do, plus the graph's own bytes (~5% of ResNet-20's)
    assert params < 0.4 and params <= size < params + 0.1


def test_safetensors_and_json_rebuild_the_model_in_a_fresh_process_without_pickle(
        pruned, tmp_path):
    model, src = pruned
    export(src, "safetensors", tmp_path / "out")
    spec = json.loads((tmp_path / "out" / "model.json").read_text())
    assert spec["arch"] == "resnet20" and spec["normalisation"]["std"] == [0.25] * 3
    x = torch.randn(2, 3, 32, 32)
    np.save(tmp_path / "x.npy", x.numpy())
    code = ("import sys, pickle, numpy as np, torch\n"
            "torch.load = pickle.load = pickle.loads = None  # no pickle on this path\n"
            "from pruning.export import load_portable\n"
            f"m, meta = load_portable({str(tmp_path / 'out')!r})\n"
            f"x = torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r}))\n"
            f"np.save({str(tmp_path / 'y.npy')!r}, m(x).detach().numpy())\n"
            "assert 'search' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO,
                   env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    with torch.no_grad():
        np.testing.assert_allclose(np.load(tmp_path / "y.npy"), model(x).numpy(),
                                   atol=1e-5, rtol=0)
