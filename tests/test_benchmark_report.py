import json

from benchmarks._common import REPO
from benchmarks.report import BLOCKS, block, markers, replace_block, table


def test_readme_tables_match_the_committed_results():
    for path in (REPO / "README.md", REPO / "benchmarks" / "README.md"):
        text = path.read_text()
        assert block() in text, f"{path} drifted: python -m benchmarks.report --write"
        for name in BLOCKS:
            if markers(name)[0] in text:
                assert block(name=name) in text, f"{path}: {name} drifted"


def test_pareto_quality_table_and_row_from_the_summary(tmp_path):
    def iv(mean, half=0.002, n=6):
        return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n}

    summary = {
        "base_test_accuracy": 0.95, "default_method": "blendprune", "targets": [0.3, 0.5],
        "matched": {"0.3": {"blendprune": iv(0.93), "single": iv(0.92)},
                    "0.5": {"blendprune": iv(0.94), "single": iv(0.935), "cdp": iv(0.9, n=2)}},
        "paired_vs_best_single": {"0.3": iv(0.01, 0.004), "0.5": iv(0.005, 0.01)},
        "paired_vs_single": {"0.3": {"blendprune": iv(0.01, 0.004)},
                             "0.5": {"blendprune": iv(0.005, 0.01), "cdp": iv(-0.035)}},
        "hypervolume": {"blendprune": 0.91, "single": 0.9},
        "compute_seconds": {"blendprune": 600.0, "single": 300.0, "cdp": 90.0},
        "blend_gain": [{"blended": "blendprune", "ablation": "ratios",
                        "targets": {"0.3": iv(-0.004, 0.003)}}]}
    (tmp_path / "pareto_quality_cifar10.json").write_text(json.dumps({
        "summary": summary, "settings": {"dataset": "cifar10", "seeds": [0, 1, 2],
                                         "final_seeds": 2, "budget": 48}}))
    rows = BLOCKS["pareto-table"](tmp_path).splitlines()
    assert rows[0].startswith("**cifar10** (base 95.0% test; default `blendprune`")
    assert rows[4] == ("| **blendprune** | 93.00 [92.80, 93.20] n=6; +1.00 [+0.60, +1.40] | "
                       "94.00 [93.80, 94.20] n=6; +0.50 [-0.50, +1.50] | 0.9100 | 600 |")
    assert rows[6] == ("| cdp | – | 90.00 [89.80, 90.20] n=2; -3.50 [-3.70, -3.30] | – "
                       "| 90 |")
    assert rows[-1].endswith("paired by fine-tune seed, pp [95% interval]): `blendprune` − "
                             "`ratios`: ≤ 0.3 -0.40 [-0.70, -0.10].")
    row = table(tmp_path).splitlines()[-1]
    assert "drop from the base at ≤ 0.5: 1.00 pp" in row
    # best at both targets and in HV, but above single by more than the interval only once
    assert row.endswith("above the best single by more than the interval at 1 targets, "
                        "need 2) |"), row


def test_rows_state_ratios_and_goals(tmp_path):
    (tmp_path / "overhead.json").write_text(json.dumps({
        "candidates": 24, "met": False,
        "median": {"ratio": 1.234, "stack_seconds": 61.7, "plain_seconds": 50.0,
                   "seconds_per_candidate_plain": 2.08}}))
    (tmp_path / "scaling.json").write_text(json.dumps({
        "candidates": 24, "met": True, "executors": {"actors": {"deap-steady": {
            "actors_started": {"1": [1, 1], "2": [2, 2]},
            "median": {"speedup": 1.91, "candidates_per_minute_1": 20.0,
                       "candidates_per_minute_2": 38.2}}}}}))
    text = table(tmp_path)
    assert "stack / plain loop = 1.234 (medians 61.7 s vs 50.0 s; 2.08 s/candidate) | " \
           "**missed** (≤ 1.10)" in text
    assert "| scaling, actors, deap-steady, 24 candidates | 1.91× with 2 workers (20.0 → 38.2 " \
           "candidates/min); 2 actor processes for 2 workers | met (≥ 1.8×) |" in text
    assert replace_block("a\n<!-- benchmark-table:start (python -m benchmarks.report --write) "
                         "-->\nold\n<!-- benchmark-table:end -->\nb", tmp_path).endswith(
        "<!-- benchmark-table:end -->\nb")


def test_candidate_cost_row_gives_same_run_variant_ratios(tmp_path):
    median = {"total": 5.5, "adaptive_bn": 0.6, "finetune": 4.0, "evaluate": 0.9}
    (tmp_path / "candidate_cost.json").write_text(json.dumps({"device": "cpu", "results": [{
        "arch": "resnet20", "median": median, "candidates_per_minute_per_worker": 10.9,
        "decode_plus_surgery_median": 0.008, "decode_plus_surgery_share": 0.0015,
        "variants": {"channels_last": {"ratio_to_default": 1.0},
                     "channels_last_unguarded": {"ratio_to_default": 0.9612},
                     "contiguous": {"ratio_to_default": 1.014}}}]}))
    row = table(tmp_path).splitlines()[-1]
    assert row.endswith("(0.1%); same genome, time vs this: channels last unguarded ×0.96, "
                        "contiguous ×1.01 | met (< 5%) |"), row


def test_zoo_row_counts_both_tools_and_names_their_failures(tmp_path):
    ok = {"status": "ok", "macs_before": 100, "macs_after": 26, "params_before": 10,
          "params_after": 3, "seconds": 1.0, "cost_exact": True, "masked_gap": 1e-8}
    rows = {f"m{i}": {"blendprune": ok, "torch_pruning": ok} for i in range(65)}
    rows["shufflenet"] = {"blendprune": {**ok, "masked_gap": None}, "torch_pruning": {
        "status": "failed", "error": "ZeroDivisionError: integer division", "seconds": 0.1}}
    (tmp_path / "zoo.json").write_text(json.dumps({"ratio": 0.5, "models": rows, "summary": {
        "blendprune": {"tried": 66, "ok": 66}, "torch_pruning": {"tried": 66, "ok": 65}}}))
    row = table(tmp_path).splitlines()[-1]
    assert row == ("| zoo, 66 torchvision CNNs, 50% L1 plan | blendprune 66/66 (CostModel exact "
                   "in 66; equal to the original with the removed channels zeroed in 65 of 65 "
                   "without cross-channel norms); Torch-Pruning 65/66 (ZeroDivisionError: "
                   "shufflenet) | met (66 of 66) |")


def test_distill_gain_row_reads_the_paired_interval(tmp_path):
    def row(distilled, plain, lo, hi, n=6):
        return {"distilled": {"mean": distilled}, "plain": {"mean": plain},
                "difference": {"mean": distilled - plain, "lo": lo, "hi": hi, "n": n}}

    (tmp_path / "distill_gain_cifar10.json").write_text(json.dumps({
        "settings": {"dataset": "cifar10", "final_steps": 800},
        "summary": {"weight": 0.5, "method": "m",
                    "per_target": {"0.5": row(0.86, 0.85, -0.01, 0.03)},
                    "all": row(0.86, 0.85, 0.004, 0.016, n=12)}}))
    line = table(tmp_path).splitlines()[-1]
    assert "≤ 0.5: 86.00% vs 85.00%, Δ +1.00 pp [-1.00, +3.00]" in line
    assert "all 12 pairs: Δ +1.00 pp [+0.40, +1.60] | pays (interval above 0) |" in line


def test_fidelity_rows_compare_the_distilled_rung_with_the_plain_one(tmp_path):
    rep = {"candidates": 16, "spearman_vs_final": {"0": 0.5, "40": 0.6},
           "pick_regret": {"0": 0.01, "40": 0.004},
           "distilled": {"weight": 0.5, "spearman_vs_final": {"40": 0.7},
                         "pick_regret": {"40": 0.0}, "accuracy_gain": {"40": 0.031},
                         "spearman_gain": {"40": {"point": 0.1, "lo": -0.05, "hi": 0.25}}}}
    (tmp_path / "fidelity_cifar10.json").write_text(json.dumps({
        "settings": {"dataset": "cifar10", "final_steps": 800},
        "targets": {"0.3": {"report": rep}}}))
    plain, distilled = table(tmp_path).splitlines()[-2:]
    assert "0 steps 0.50, 40 steps 0.60" in plain and "40: 0.40 pp" in plain
    assert ("40 steps 0.70 (plain 0.60, gain +0.10 [-0.05, +0.25], holdout +3.10 pp); "
            "pick regret 40: 0.00 pp (plain 0.40)") in distilled
    assert distilled.endswith("| 40 steps: no measurable gain (Spearman gain's 95% interval) |")
    rep["distilled"]["spearman_gain"]["40"]["lo"] = 0.02
    (tmp_path / "fidelity_cifar10.json").write_text(json.dumps({
        "settings": {"dataset": "cifar10", "final_steps": 800},
        "targets": {"0.3": {"report": rep}}}))
    assert table(tmp_path).endswith("| 40 steps: ranks better (Spearman gain's 95% interval) |")
