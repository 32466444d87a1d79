"""The seed methods as training modes against plain fine-tuning at the same FLOPs and
compute, on the committed ResNet-20 bases.

Every method trains `--epochs` epochs with the same schedule (SGD, cosine from `--lr`,
batch 128, the base recipe's augmentation) on the training split minus the benchmarks'
holdout, and is scored once on the test split:

  dcff       the uniform L1 plan at `--flops`, its filters fused from the base model's
             banks with DCFF's temperature schedule
  cdp        CDP/DTC sparse training from the base model down to `--flops` (its own plan)
  lapp       LAPP's learnt thresholds from the base model down to `--flops` over the first
             half of the epochs (its own plan; the widths it learns are recorded)
  finetune   the uniform L1 plan: apply_plan, adaptive BN, then the same training
  lapp-widths  the widths LAPP learnt (the `lapp` run of the same seed), the highest-L1
             channels kept, trained as finetune: whether LAPP's allocation or its
             training while pruning decides its accuracy
  searched   the plan the default search (benchmarks/pareto_quality.py, same seed)
             picked at `--flops`: apply_plan, adaptive BN, the same training; skipped
             until that search is in the cache
  scratch    the uniform plan's compact architecture, freshly initialised

`--lapp KEY=VALUE ...` runs LAPP (and lapp-widths) with other options, recorded as
`lapp[KEY=VALUE,...]`: any of LAPP's keyword arguments, and `prune_fraction`, the share of
the epochs its pruning phase takes (0.5).

Each (method, seed) is kept in `benchmarks/progress/` as it finishes, keyed by the
settings and the base model's weights, so a stopped run resumes, across sessions once that
file is committed, and a retrained base starts afresh.

    python -m benchmarks.seed_methods --dataset fashion-mnist --epochs 5 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import DEFAULT_DATA_ROOT, PROGRESS, RESULTS, write_result
from benchmarks.base_models import HOLDOUT, base_model, load, test_accuracy, weights_digest
from benchmarks.pareto_quality import searched_plan
from pruning import (
    CDP,
    DCFF,
    LAPP,
    CostModel,
    GroupMap,
    ImageData,
    Plan,
    TensorLoader,
    TensorSplit,
    TrainHooks,
    adaptive_bn,
    apply_plan,
    compute_scores,
    count_cost,
    create_model,
    holdout_split,
    top_channels,
    train,
)
from pruning.targets import uniform_plan

METHODS = ("dcff", "cdp", "lapp", "lapp-widths", "finetune", "searched", "scratch")
VARIED = ("lapp", "lapp-widths")  # the methods --lapp changes


def lapp_options(pairs: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings as LAPP keyword arguments, numbers as numbers."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--lapp: expected KEY=VALUE, got {pair!r}")
        try:
            out[key] = int(value) if value.lstrip("-").isdigit() else float(value)
        except ValueError:
            out[key] = value
    return out


def variant(args: argparse.Namespace) -> str:
    opts = lapp_options(args.lapp)
    return "[" + ",".join(f"{k}={v}" for k, v in sorted(opts.items())) + "]" if opts else ""


@dataclass
class Setting:
    """What every method starts from: the data, its training split (minus the holdout), the
    committed base model and its groups and cost model."""

    data: ImageData
    train: TensorSplit
    base: torch.nn.Module
    x: torch.Tensor
    gm: GroupMap
    cost: CostModel

    @classmethod
    def load(cls, args: argparse.Namespace) -> Setting:
        data = load(args.dataset, args.data_root)
        tr, _ = holdout_split(data, HOLDOUT, seed=0)
        base = base_model(args.dataset, data)
        x = tr.x[:1].float()
        gm = GroupMap(base, x)
        return cls(data, tr, base, x, gm, CostModel(base, gm, x))

    def loader(self, seed: int, *, augment: bool = True) -> TensorLoader:
        mean, std = self.data.mean_std()
        if not augment:
            return TensorLoader(*self.train, batch_size=128, mean=mean, std=std, seed=seed)
        return TensorLoader(*self.train, batch_size=128, mean=mean, std=std, augment=True,
                            pad=self.data.pad, flip=self.data.flip, seed=seed)


def add_training_args(p: argparse.ArgumentParser, *, dataset: str, flops: float) -> None:
    """The arguments that set a method's training, shared with benchmarks.lapp_gradients."""
    p.add_argument("--dataset", choices=["fashion-mnist", "cifar10"], default=dataset)
    p.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT)
    p.add_argument("--flops", type=float, default=flops, help="FLOPs kept")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--lapp", nargs="*", default=[], metavar="KEY=VALUE",
                   help="LAPP options (its keyword arguments, prune_fraction)")


def run(method: str, seed: int, args: argparse.Namespace,
        done: dict[str, Any]) -> dict[str, Any] | None:
    s = Setting.load(args)
    data, base, x, gm, cost = s.data, s.base, s.x, s.gm, s.cost
    table = compute_scores(base, gm, ["l1"])
    plan = uniform_plan({g.name: table.scores[g.name]["l1"] for g in gm},
                        lambda p: cost.predict(p)[0] / cost.base_flops, args.flops)
    torch.manual_seed(seed)
    loader, bn = s.loader(seed), s.loader(seed, augment=False)
    hooks: TrainHooks | None = None
    if method == "dcff":
        dcff = DCFF(base, gm, plan, args.epochs, t_start=None)
        model, hooks = dcff.model, dcff
    elif method == "cdp":
        cdp = CDP(base, gm, cost, target_flops_ratio=args.flops, lr=args.lr,
                  sparse_steps=round(0.5 * args.epochs * len(loader)))
        model, hooks = cdp.model, cdp
    elif method == "lapp":
        opts = lapp_options(args.lapp)
        fraction = opts.pop("prune_fraction", 0.5)
        lapp = LAPP(base, gm, cost, target_flops_ratio=args.flops,
                    prune_steps=round(fraction * args.epochs * len(loader)), **opts)
        model, hooks = lapp.model, lapp
    elif method in ("finetune", "searched", "lapp-widths"):
        if method == "lapp-widths":
            source = f"lapp{variant(args)}/{seed}"
            if source not in done:
                print(f"lapp-widths/{seed}: run {source} first; skipped", flush=True)
                return None
            widths = done[source]["widths"]
            plan = Plan({g: top_channels(table.scores[g]["l1"], k) for g, k in widths.items()})
        elif method == "searched":
            found = searched_plan(args.dataset, weights_digest(base), seed, args.flops)
            if found is None:
                print(f"searched/{seed}: no finished search in the pareto_quality cache; "
                      "skipped", flush=True)
                return None
            plan = Plan.from_dict(found)
        model = apply_plan(base, gm, plan)
        adaptive_bn(model, bn.batches(20))
    else:
        fresh = create_model("resnet20", data.num_classes, data.in_channels)
        model = apply_plan(fresh, GroupMap(fresh, x), plan)
    start, cpu = time.perf_counter(), time.process_time()
    train(model, loader, epochs=args.epochs, lr=args.lr, hooks=hooks)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    extra: dict[str, Any] = {"widths": plan.counts()}
    if method == "dcff":
        model = dcff.to_compact()
    elif method == "cdp":
        extra = {k: cdp.metrics()[k] for k in ("channels_dtc", "channels_cut", "prop")}
        extra["widths"] = cdp.kept_plan().counts()
        model = cdp.to_compact()
    elif method == "lapp":
        extra = {"widths": lapp.kept_plan().counts()}
        model = lapp.to_compact()
    flops = count_cost(model, x)[0] / count_cost(base, x)[0]
    return {"method": method, "seed": seed, "test_accuracy": test_accuracy(model.eval(), data),
            "flops_ratio": flops, "train_seconds": seconds, "train_cpu_seconds": cpu, **extra}


def plot_widths(summary: dict[str, dict[str, Any]], order: list[str], sizes: dict[str, int],
                title: str, stem: Path) -> Path:
    """Kept channels per group (model order) by method, median over seeds, over the base's
    widths: what each method's plan looks like beside the others'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.2), dpi=120)
    x = range(len(order))
    ax.bar(x, [sizes[g] for g in order], color="0.9", label="base")
    for m, r in summary.items():
        # scratch trains the uniform plan (as finetune), lapp-widths LAPP's: no new line
        if m.partition("[")[0] not in ("scratch", "lapp-widths") and r["widths"]:
            ax.plot(x, [r["widths"][g] for g in order], marker="o", ms=3, label=m)
    ax.set_xticks(list(x), order, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("kept channels")
    ax.set_title(f"{title}: kept channels per group")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    png = stem.parent / f"{stem.name}.png"  # not with_suffix: the name holds "0.5"
    fig.savefig(png)
    plt.close(fig)
    return png


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_training_args(p, dataset="fashion-mnist", flops=0.5)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = p.parse_args()
    torch.set_num_threads(1)
    data = load(args.dataset, args.data_root)
    base = base_model(args.dataset, data)
    key = f"{args.dataset}-{args.flops}-{args.epochs}-{args.lr}-{weights_digest(base)}"
    cache = PROGRESS / f"seed_methods-{key}.json"
    done: dict[str, Any] = json.loads(cache.read_text()) if cache.exists() else {}
    for seed in args.seeds:
        for method in args.methods:
            name = f"{method}{variant(args) if method in VARIED else ''}/{seed}"
            if name not in done:
                result = run(method, seed, args, done)
                if result is None:
                    continue
                # Other runs at these settings may have finished meanwhile: merge, not clobber.
                done = {**(json.loads(cache.read_text()) if cache.exists() else {}),
                        name: result}
                cache.parent.mkdir(parents=True, exist_ok=True)
                cache.write_text(json.dumps(done))
            r = done[name]
            print(f"{name:14s} test {r['test_accuracy']:.4f}  FLOPs {r['flops_ratio']:.3f}  "
                  f"{r['train_seconds']:.0f} s", flush=True)
    gm = GroupMap(base, data.x_test[:1].float())
    order = gm.in_model_order(base)
    summary = {}
    # every method (and LAPP variant) in the cache at these settings, whichever ran now
    names = sorted({k.rpartition("/")[0] for k in done},
                   key=lambda m: (METHODS.index(m.partition("[")[0]), m))
    for m in names:  # over every seed in the cache, not only this call's
        runs = [done[k] for k in sorted(done, key=lambda k: int(k.rpartition("/")[2]))
                if k.rpartition("/")[0] == m]
        accs = [r["test_accuracy"] for r in runs]
        summary[m] = {"median": statistics.median(accs), "runs": accs,
                      "flops_ratio": statistics.median(r["flops_ratio"] for r in runs),
                      "train_seconds": statistics.median(r["train_seconds"] for r in runs),
                      "widths": {g: statistics.median(r["widths"][g] for r in runs
                                                      if "widths" in r) for g in order}
                      if any("widths" in r for r in runs) else None}
    name = f"seed_methods_{args.dataset}_{args.flops:g}"
    png = plot_widths(summary, order, {g: gm[g].size for g in order},
                      f"{args.dataset} ResNet-20 at {args.flops:g} FLOPs", RESULTS / name)
    write_result(name, {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "summary": summary, "plot": png.name,
        "runs": {k: v for k, v in done.items() if k.rpartition("/")[0] in summary}})
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
