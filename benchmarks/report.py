"""The benchmark tables, generated from `benchmarks/results/*.json`.

    python -m benchmarks.report            # print the tables
    python -m benchmarks.report --write    # update benchmarks/README.md and README.md

Both files hold the tables between markers; a test fails when they drift from the JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks._common import REPO, RESULTS


def markers(name: str) -> tuple[str, str]:
    """The comments that enclose generated block `name` in a README."""
    return f"<!-- {name}:start (python -m benchmarks.report --write) -->", f"<!-- {name}:end -->"


START, END = markers("benchmark-table")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _met(d: dict[str, Any]) -> str:
    return "met" if d.get("met") else "**missed**"


def _variants(r: dict[str, Any]) -> str:
    """Same-run time ratios of the other memory-format / kernel-guard variants."""
    others = {k: v for k, v in r.get("variants", {}).items() if k != "channels_last"}
    if not others:
        return ""
    return "; same genome, time vs this: " + ", ".join(
        f"{k.replace('_', ' ')} ×{v['ratio_to_default']:.2f}" for k, v in others.items())


def candidate_cost(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for r in d["results"]:
        m = r["median"]
        rows.append((f"candidate_cost, {r['arch']} ({d['device']})",
                     f"{m['total']:.2f} s/candidate ({r['candidates_per_minute_per_worker']:.1f}"
                     f"/min/worker): adaptive BN {m['adaptive_bn']:.2f} s, fine-tune "
                     f"{m['finetune']:.2f} s, evaluate {m['evaluate']:.2f} s; decode+surgery "
                     f"{1000 * r['decode_plus_surgery_median']:.0f} ms "
                     f"({_pct(r['decode_plus_surgery_share'])})" + _variants(r),
                     "met (< 5%)" if r["decode_plus_surgery_share"] < 0.05 else "**missed**"))
    return rows


def overhead(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    m = d["median"]
    return [(f"overhead, {d['candidates']} candidates",
             f"stack / plain loop = {m['ratio']:.3f} (medians {m['stack_seconds']:.1f} s vs "
             f"{m['plain_seconds']:.1f} s; {m['seconds_per_candidate_plain']:.2f} s/candidate)"
             + (f"; steady state (without the one-off actor start) "
                f"{m['steady_state_ratio']:.3f}" if "steady_state_ratio" in m else ""),
             f"{_met(d)} (≤ 1.10)")]


def scaling(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for executor, algorithms in d["executors"].items():
        for algo, r in algorithms.items():
            m = r["median"]
            started = r.get("actors_started", {}).get("2")
            procs = f"; {max(started)} actor processes for 2 workers" if started else ""
            if "steady_state_speedup" in m:
                procs += f"; {m['steady_state_speedup']:.2f}× after the actors' start"
            if "candidate_slowdown" in m:
                procs += (f"; each candidate {100 * (m['candidate_slowdown'] - 1):.0f}% slower "
                          "with 2 workers on 2 cores")
            goal = ("met" if m["speedup"] >= 1.8 else "**missed**") + " (≥ 1.8×)" \
                if executor == "actors" else "reference (Tune)"
            rows.append((f"scaling, {executor}, {algo}, {d['candidates']} candidates",
                         f"{m['speedup']:.2f}× with 2 workers ({m['candidates_per_minute_1']:.1f}"
                         f" → {m['candidates_per_minute_2']:.1f} candidates/min){procs}", goal))
    return rows


def cluster_sim(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    s, a = d["summary"], d["settings"]
    eff = ", ".join(f"{k} {100 * v['efficiency']:.1f}%" for k, v in s.items())
    st = s["deap-steady"]
    def once(r: dict[str, Any]) -> str:
        return "each once" if r["ledger_exactly_once"] and r["mlflow_exactly_once"] else \
            "NOT each once"

    def recovery(r: dict[str, Any]) -> str:
        if "resume_seconds" in r:
            return (f", resumed after {r['recorded_before_kill']} in {r['resume_seconds']:.0f} s "
                    f"(first new result after {r['first_result_after_resume_s']:.0f} s)")
        return f", first result {r['first_result_after_fault_s']:.2f} s after"

    faults = "; ".join(f"{r['fault']}: {r['finished']}/{r['candidates']} finished, {once(r)}, "
                       f"{r['actors_alive_after']} actors left{recovery(r)}"
                       for r in d["faults"])
    text = (f"throughput vs barrier-bound ideal (median of {a['repeats']}): {eff}; dispatch "
            f"p50 {st['dispatch_ms_p50']:.1f} ms, p99 {st['dispatch_ms_p99']:.1f} ms; driver "
            f"CPU {st['driver_cpu_ms_per_candidate']:.1f} ms/candidate; {faults}")
    return [(f"cluster_sim, {a['workers']} stub actors, {a['nodes']}×{a['gpus_per_node']} fake "
             f"GPUs", text, f"{_met(d)} (steady ≥ 90% with slow tracking too; each candidate "
             f"once; {a['per_gpu']} actors per GPU)")]


def gpu_packing(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    parts = [f"{r['actors']}/GPU: {r['candidates_per_gpu_minute']:.1f}/GPU-min "
             f"({r['speedup_vs_1']:.2f}×), {r['peak_mib_per_actor']:.0f} MiB/actor"
             for r in d["results"]]
    gpu = d["machine"].get("gpu", d["device"])
    return [(f"gpu_packing, {d['arch']}, {gpu}", "; ".join(parts), "measured (no goal)")]


def gpu_seed_methods(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(f"gpu_seed_methods, {m} {r['arch']}, {d['device']}",
             f"{r['epochs']} epochs in {r['train_seconds']:.0f} s ({r['epochs_per_minute']:.2f}"
             f"/min), test {_pct(r['test_accuracy'])} after training on {d['train_images']} "
             f"images, FLOPs {r['flops_ratio']:.3f}", "measured (a short schedule)")
            for m, r in d["results"].items()]


def vs_naive(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    m = d["median"]
    return [(f"vs_naive, ResNet-20 ({d['data']})",
             f"{m['speedup']:.2f}× faster per candidate ({m['ours_seconds']:.2f} s vs "
             f"{m['naive_seconds']:.2f} s, equal FLOPs)", f"{_met(d)} (≥ 3×)")]


def pareto_quality(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    s, a = d["summary"], d["settings"]
    ds = a["dataset"]
    if "matched" not in s:
        return [(f"pareto_quality, {ds} ResNet-20", "made before the matched-FLOPs protocol of "
                 f"issue 14; rerun `python -m benchmarks.pareto_quality --dataset {ds}`",
                 "superseded")]
    default = s["default_method"]
    parts, wins, above = [], True, 0
    for t in s["targets"]:
        row, vs = s["matched"].get(str(t), {}), s["paired_vs_best_single"].get(str(t))
        if default not in row or vs is None:
            wins = False
            continue
        mine = row[default]
        wins &= all(mine["mean"] >= r["mean"] for r in row.values())
        above += vs["lo"] > 0
        parts.append(f"≤ {t:g}: {_pct(mine['mean'])} vs best single "
                     f"{_pct(row['single']['mean'])}, Δ {100 * vs['mean']:+.2f} pp "
                     f"[{100 * vs['lo']:+.2f}, {100 * vs['hi']:+.2f}]")
    top = s["matched"].get(str(max(s["targets"])), {}).get(default)
    if top:
        parts.append(f"drop from the base at ≤ {max(s['targets']):g}: "
                     f"{100 * (s['base_test_accuracy'] - top['mean']):.2f} pp")
    hv = s["hypervolume"]
    wins &= max(hv, key=hv.get) == default
    hv_text = ", ".join(f"{m} {v:.4f}" for m, v in hv.items())
    text = (f"test accuracy at matched FLOPs ({len(a['seeds'])} search × "
            f"{a['final_seeds']} fine-tune seeds, 95% interval of the paired difference): "
            + "; ".join(parts) + f"; attainment HV {hv_text}")
    goal = "met" if wins and above >= 2 else \
        f"**missed** (best at every target and HV: {'yes' if wins else 'no'}; above the " \
        f"best single by more than the interval at {above} targets, need 2)"
    return [(f"pareto_quality, {ds} ResNet-20 (base {_pct(s['base_test_accuracy'])} test), "
             f"{a['budget']} candidates/search", text, goal)]


def pareto_table(d: dict[str, Any]) -> str:
    """Per method and target: test accuracy after the final fine-tune (mean, 95% interval)
    and the paired difference to the best single criterion; attainment HV; compute."""
    s, a = d["summary"], d["settings"]
    targets = [str(t) for t in s["targets"]]
    versus = s.get("paired_vs_single", {})
    methods = list(dict.fromkeys([*s["hypervolume"], *(m for t in targets
                                                       for m in s["matched"].get(t, {}))]))
    head = (f"**{a['dataset']}** (base {_pct(s['base_test_accuracy'])} test; default "
            f"`{s['default_method']}`; {len(a['seeds'])} search × {a['final_seeds']} fine-tune "
            f"seeds; each cell: test accuracy % [95% interval] and how many finals, then the "
            f"paired difference to the best single criterion at uniform ratios in pp [95% "
            f"interval])")
    lines = [head, "", "| method | " + " | ".join(f"≤ {t}" for t in targets)
             + " | attainment HV | compute s |", "|---|" + "---|" * (len(targets) + 2)]
    for m in methods:
        cells = []
        for t in targets:
            r, v = s["matched"].get(t, {}).get(m), versus.get(t, {}).get(m)
            cell = f"{100 * r['mean']:.2f} [{100 * r['lo']:.2f}, {100 * r['hi']:.2f}] " \
                f"n={r['n']}" if r else "–"
            if v:
                cell += f"; {100 * v['mean']:+.2f} [{100 * v['lo']:+.2f}, {100 * v['hi']:+.2f}]"
            cells.append(cell)
        hv, sec = s["hypervolume"].get(m), s["compute_seconds"].get(m)
        name = f"**{m}**" if m == s["default_method"] else m
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {f'{hv:.4f}' if hv is not None else '–'} | "
                       f"{f'{sec:.0f}' if sec is not None else '–'} |")
    gains = [f"`{g['blended']}` − `{g['ablation']}`: " + ", ".join(
        f"≤ {t} {100 * v['mean']:+.2f} [{100 * v['lo']:+.2f}, {100 * v['hi']:+.2f}]"
        for t, v in g["targets"].items()) for g in s.get("blend_gain", []) if g["targets"]]
    if gains:
        lines += ["", "What the blend adds (a blended search minus its one-criterion ablation, "
                  "paired by fine-tune seed, pp [95% interval]): " + "; ".join(gains) + "."]
    return "\n".join(lines)


def zoo(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows, counts = d["models"], d["summary"]
    ours = [r["blendprune"] for r in rows.values()]
    checked = [r for r in ours if r.get("masked_gap") is not None]
    failures: dict[str, list[str]] = {}
    for name, r in rows.items():
        tp = r["torch_pruning"]
        if tp["status"] != "ok":
            failures.setdefault(tp["error"].split(":")[0], []).append(name)
    theirs = "; ".join(f"{why}: {', '.join(names)}" for why, names in failures.items())
    ok = counts["blendprune"]["ok"]
    return [(f"zoo, {len(rows)} torchvision CNNs, {d['ratio']:.0%} L1 plan",
             f"blendprune {ok}/{len(rows)} (CostModel exact in "
             f"{sum(bool(r.get('cost_exact')) for r in ours)}; equal to the original with "
             f"the removed channels zeroed in {sum(r['masked_gap'] <= 1e-4 for r in checked)}"
             f" of {len(checked)} without cross-channel norms); "
             f"Torch-Pruning {counts['torch_pruning']['ok']}/{len(rows)} ({theirs})",
             "met (66 of 66)" if ok == len(rows) == 66 else f"**missed** ({ok} of 66)")]


def fidelity(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    out = []
    for t, r in d["targets"].items():
        rep = r["report"]
        rho = ", ".join(f"{k} steps {v:.2f}" for k, v in rep["spearman_vs_final"].items())
        regret = ", ".join(f"{k}: {100 * v:.2f} pp" for k, v in rep["pick_regret"].items())
        out.append((f"fidelity, {d['settings']['dataset']} ResNet-20 at ≤ {t} FLOPs, "
                    f"{rep['candidates']} structures",
                    f"Spearman with the final {d['settings']['final_steps']}-step test "
                    f"accuracy: {rho} (0 = adaptive BN alone); pick regret {regret}",
                    "measured (decides the halving rung)"))
        if distilled := rep.get("distilled"):
            out.append(fidelity_distilled(distilled, t, rep))
    return out


def fidelity_distilled(d: dict[str, Any], t: str, rep: dict[str, Any]
                       ) -> tuple[str, str, str]:
    """The distilled brief fine-tune's ranking against the plain one's, rung by rung."""
    def num(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    def gain(g: dict[str, float | None]) -> str:
        if g["point"] is None:
            return "gain n/a"
        return f"gain {g['point']:+.2f} [{g['lo']:+.2f}, {g['hi']:+.2f}]"

    def verdict(g: dict[str, float | None]) -> str:
        lo, hi = g["lo"], g["hi"]
        return ("ranks better" if lo is not None and lo > 0 else
                "ranks worse" if hi is not None and hi < 0 else "no measurable gain")

    rungs = list(d["spearman_vs_final"])
    rho = "; ".join(f"{k} steps {num(d['spearman_vs_final'][k])} (plain "
                    f"{num(rep['spearman_vs_final'][k])}, {gain(d['spearman_gain'][k])}, "
                    f"holdout {100 * d['accuracy_gain'][k]:+.2f} pp)" for k in rungs)
    regret = ", ".join(f"{k}: {100 * d['pick_regret'][k]:.2f} pp "
                       f"(plain {100 * rep['pick_regret'][k]:.2f})" for k in rungs)
    return (f"fidelity, brief fine-tune distilled from the base (weight {d['weight']:g}), "
            f"≤ {t} FLOPs, {rep['candidates']} structures",
            f"Spearman with the final: {rho}; pick regret {regret}",
            "; ".join(f"{k} steps: {verdict(d['spearman_gain'][k])}" for k in rungs)
            + " (Spearman gain's 95% interval)")


def zoo_table(d: dict[str, Any]) -> str:
    """Per model: each tool's status, MACs and parameters kept, seconds."""
    lines = ["| model | blendprune | MACs kept | params kept | s | Torch-Pruning | MACs kept "
             "| s |", "|---|---|---|---|---|---|---|---|"]
    for name, r in d["models"].items():
        b, t = r["blendprune"], r["torch_pruning"]

        def kept(x: dict[str, Any], key: str) -> str:
            after = x.get(f"{key}_after")
            return f"{after / x[f'{key}_before']:.3f}" if after else "–"

        status = t["status"] if t["status"] == "ok" else f"{t['status']}: {t['error'][:60]}"
        lines.append(f"| {name} | {b['status']} | {kept(b, 'macs')} | {kept(b, 'params')} | "
                     f"{b.get('seconds', 0):.1f} | {status} | {kept(t, 'macs')} | "
                     f"{t.get('seconds', 0):.1f} |")
    return "\n".join(lines)


def seed_methods(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    a, s = d["settings"], d["summary"]
    runs = ", ".join(f"{m} {_pct(r['median'])} (FLOPs {r['flops_ratio']:.3f}, "
                     f"{len(r['runs'])} seed{'s' * (len(r['runs']) > 1)})"
                     for m, r in s.items())
    return [(f"seed_methods, {a['dataset']} ResNet-20 at {a['flops']:g} FLOPs, "
             f"{a['epochs']} epochs each", f"test accuracy: {runs}",
             "evidence (training modes vs fine-tuning)")]


def distill_gain(d: dict[str, Any]) -> list[tuple[str, str, str]]:
    s, a = d["summary"], d["settings"]

    def delta(x: dict[str, Any]) -> str:
        return f"Δ {100 * x['mean']:+.2f} pp [{100 * x['lo']:+.2f}, {100 * x['hi']:+.2f}]"

    per = "; ".join(f"≤ {t}: {100 * r['distilled']['mean']:.2f}% vs "
                    f"{100 * r['plain']['mean']:.2f}%, {delta(r['difference'])}"
                    for t, r in s["per_target"].items())
    gain = s["all"]["difference"]
    verdict = ("pays (interval above 0)" if gain["lo"] > 0 else
               "hurts (interval below 0)" if gain["hi"] < 0 else "no measurable gain")
    return [(f"distill_gain, {a['dataset']} ResNet-20, weight {s['weight']:g}, "
             f"{a['final_steps']}-step final fine-tune of `{s['method']}`'s picks",
             f"distilled vs plain, paired by plan and seed: {per}; all {gain['n']} pairs: "
             f"{delta(gain)}", verdict)]


SUMMARIZERS = {"candidate_cost": candidate_cost, "overhead": overhead, "scaling": scaling,
               "cluster_sim": cluster_sim, "gpu_packing": gpu_packing,
               "gpu_seed_methods": gpu_seed_methods, "vs_naive": vs_naive,
               "pareto_quality": pareto_quality, "fidelity": fidelity, "zoo": zoo,
               "seed_methods": seed_methods, "distill_gain": distill_gain}


def table(results: Path = RESULTS) -> str:
    lines = ["| benchmark | result | goal |", "|---|---|---|"]
    for name in SUMMARIZERS:
        for path in sorted(results.glob(f"{name}*.json")):
            data = json.loads(path.read_text())
            for row in SUMMARIZERS[name](data):
                lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def zoo_body(results: Path) -> str:
    path = results / "zoo.json"
    return zoo_table(json.loads(path.read_text())) if path.exists() else "(not run yet)"


def pareto_body(results: Path) -> str:
    """One table per dataset whose pareto_quality result has the matched-FLOPs summary."""
    found = [json.loads(p.read_text()) for p in sorted(results.glob("pareto_quality_*.json"))]
    tables = [pareto_table(d) for d in found if "matched" in d["summary"]]
    return "\n\n".join(tables) or "(not run yet under the matched-FLOPs protocol)"


# Generated blocks: a README holds any of them between their markers.
BLOCKS = {"benchmark-table": table, "zoo-table": zoo_body, "pareto-table": pareto_body}


def block(results: Path = RESULTS, name: str = "benchmark-table") -> str:
    start, end = markers(name)
    return f"{start}\n{BLOCKS[name](results)}\n{end}"


def _replace(text: str, start: str, end: str, new: str) -> str:
    if start not in text or end not in text:
        raise ValueError(f"missing the markers {start!r} ... {end!r}")
    head, rest = text.split(start, 1)
    return head + new + rest.split(end, 1)[1]


def replace_block(text: str, results: Path = RESULTS) -> str:
    """`text` with the benchmark table (required) and every other block it holds redone."""
    text = _replace(text, START, END, block(results))
    for name in BLOCKS:
        start, end = markers(name)
        if name != "benchmark-table" and start in text:
            text = _replace(text, start, end, block(results, name))
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help="update the READMEs in place")
    args = p.parse_args()
    if not args.write:
        print(table())
        return
    for path in (REPO / "benchmarks" / "README.md", REPO / "README.md"):
        path.write_text(replace_block(path.read_text()))
        print(f"updated {path}")


if __name__ == "__main__":
    main()
