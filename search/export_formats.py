"""`blendprune export --format pt|onnx|safetensors`: a final-stage model as a deployer
needs it, checked where it can be (ONNX against torch with onnxruntime, its size against
the unpruned arch's, its latency beside torch's)."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pruning import Plan, count_cost, create_model, load_pruned, measure_latency
from pruning.export import export_onnx, save_portable

__all__ = ["FORMATS", "export"]

FORMATS = ("pt", "onnx", "safetensors")
ATOL = 1e-4


def _ort_latency(session: object, x: np.ndarray, repeats: int = 30) -> float:
    run = session.run  # type: ignore[attr-defined]
    for _ in range(5):
        run(None, {"input": x})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(None, {"input": x})
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def export(src: Path, fmt: str, out: Path) -> list[str]:
    """Write `src` (a `save_pruned` file) to `out` in `fmt`; what was written and checked."""
    if fmt == "pt":
        shutil.copyfile(src, out)
        return [f"{out} (load with pruning.load_pruned)"]
    model, meta = load_pruned(src)
    shape = tuple(meta["input_shape"])
    if fmt == "safetensors":
        weights, spec = save_portable(model, out, arch=meta["arch"],
                                      plan=Plan.from_dict(meta["plan"]),
                                      num_classes=meta["num_classes"],
                                      input_shape=shape, extra=meta.get("extra"))
        return [f"{weights}", f"{spec} (rebuild with pruning.export.load_portable)"]
    import onnxruntime as ort

    export_onnx(model, out, shape)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(4, *shape[1:])
    with torch.no_grad():
        expect = model(x).numpy()
    got = session.run(None, {"input": x.numpy()})[0]
    gap = float(np.abs(got - expect).max())
    if gap > ATOL:
        raise RuntimeError(f"onnx: {out} differs from the torch model by {gap:.2e} "
                           f"(more than {ATOL})")
    base = create_model(meta["arch"], meta["num_classes"], shape[1]).eval()
    with tempfile.TemporaryDirectory() as tmp:
        base_size = export_onnx(base, Path(tmp) / "base.onnx", shape).stat().st_size
    size = out.stat().st_size
    params = count_cost(model, torch.zeros(shape))[1] / count_cost(base, torch.zeros(shape))[1]
    one = torch.randn(*shape)
    ort_s = _ort_latency(session, one.numpy())
    torch_s = measure_latency(model, one)
    return [f"{out}: {size / 1024:.0f} KiB, {size / base_size:.2f}x the unpruned arch's "
            f"ONNX ({base_size / 1024:.0f} KiB; params {params:.2f}x)",
            f"onnxruntime matches torch within {gap:.1e} on a batch of 4",
            f"latency, batch 1, this CPU: onnxruntime {1000 * ort_s:.2f} ms, torch "
            f"{1000 * torch_s:.2f} ms"]
