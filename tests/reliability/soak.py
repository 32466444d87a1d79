"""Soak: hundreds of random and extreme genomes through one resident Evaluator.

    python -m tests.reliability.soak --genomes 500 [--no-channels-last]

One process, one Evaluator, as a search worker holds it. The genomes cover the corners of
the genome box (every layer at `min_channels`, every layer unpruned, each layer at one end
or the other) and uniform draws inside it. Prints progress and a final JSON summary; exits
0 only if every candidate finished "ok" and the base model's parameters and buffers are
bit-identical afterwards. A native fault kills the process, so the caller sees its signal.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

import torch

from pruning import (
    EvalSettings,
    Evaluator,
    GenomeLayout,
    GroupMap,
    TensorLoader,
    compute_scores,
    create_model,
    holdout_split,
    load_dataset,
    train,
)

POOL = ["l1", "l2", "fpgm", "bn_gamma", "dcff_kl", "texture", "taylor", "hrank", "apoz"]


def soak_genomes(layout: GenomeLayout, n: int, seed: int) -> list[list[float]]:
    """`n` genomes: a fifth at the corners of the box, the rest uniform inside it."""
    rng = random.Random(seed)
    lo, hi = layout.bounds()
    n_a = layout.n_alpha

    def alphas() -> list[float]:
        if rng.random() < 0.5:  # one criterion alone, as the search's seeds are
            k = rng.randrange(n_a)
            return [float(i == k) for i in range(n_a)]
        return [rng.uniform(lo[i], hi[i]) for i in range(n_a)]

    corners = [hi[n_a:], lo[n_a:]]  # min_channels everywhere; nothing pruned
    while len(corners) < max(2, n // 5):
        corners.append([rng.choice((a, b)) for a, b in zip(lo[n_a:], hi[n_a:])])
    genomes = [alphas() + list(c) for c in corners[:n]]
    while len(genomes) < n:
        genomes.append(alphas() + [rng.uniform(a, b) for a, b in zip(lo[n_a:], hi[n_a:])])
    return genomes


def build_evaluator(channels_last: bool, steps: int, seed: int) -> Evaluator:
    data = load_dataset("digits")
    tr, ho = holdout_split(data, 0.15, seed=seed)
    mean, std = data.mean_std()
    torch.manual_seed(seed)
    model = create_model("resnet20", data.num_classes, data.in_channels)
    train(model, TensorLoader(*tr, batch_size=128, mean=mean, std=std, augment=True),
          epochs=10, lr=0.1)
    model.eval()
    group_map = GroupMap(model, tr[0][:1].float())
    table = compute_scores(model, group_map, POOL,
                           TensorLoader(*tr, batch_size=64, mean=mean, std=std).batches(4))
    # max_ratio near 1 with min_channels=1: the upper corner keeps one channel per layer.
    layout = GenomeLayout.build(table, group_map, max_ratio=0.99, min_channels=1)
    settings = EvalSettings(bn_batches=2, finetune_steps=steps, lr=0.02, seed=seed,
                            channels_last=channels_last)
    return Evaluator(model, group_map, table, layout, tr, ho, mean=mean, std=std,
                     settings=settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--genomes", type=int, default=500)
    parser.add_argument("--steps", type=int, default=5, help="fine-tune steps per candidate")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    ev = build_evaluator(args.channels_last, args.steps, args.seed)
    before = {k: v.clone() for k, v in ev.base.state_dict().items()}
    genomes = soak_genomes(ev.layout, args.genomes, args.seed)
    failed: list[str] = []
    narrowest = min(len(k) for k in ev.decode(genomes[0]).kept.values())
    for i, genome in enumerate(genomes, 1):
        result = ev.evaluate(genome)
        if result.status != "ok":
            failed.append(f"{i - 1}: {result.reason}")
        if i % 50 == 0 or i == len(genomes):
            print(f"soak: {i}/{len(genomes)} candidates, {len(failed)} failed, "
                  f"{time.perf_counter() - start:.0f}s", flush=True)
    after = ev.base.state_dict()
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    summary = {"evaluated": len(genomes), "ok": len(genomes) - len(failed),
               "failed": failed[:10], "base_changed": changed,
               "narrowest_layer_at_upper_corner": narrowest,
               "channels_last": args.channels_last,
               "seconds": round(time.perf_counter() - start, 1)}
    print(json.dumps(summary))
    return 0 if not failed and not changed else 1


if __name__ == "__main__":
    sys.exit(main())
