"""The `blendprune` command: search, resume, train, front, export, presets.

Exit status: 0 success; 2 invalid input (one line naming the field and the value,
nothing written anywhere); 1 failure at run time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .config import Config, ConfigError, list_presets, load_config, preset_path
from .training_mode import list_modes

if TYPE_CHECKING:  # imported where used: `blendprune --help` stays fast
    from .prepare import Inputs
    from .rundir import RunDir
    from .tracking import Tracker

RUN_DIR_TAG = "blendprune.run_dir"

EPILOG = """examples:
  blendprune search                                  # embedded default: digits, ResNet-20
  blendprune search cifar10-resnet56 --set data.root=/data/cifar-10-batches-py
  blendprune search my.yaml --set search.workers=8 --address ray://head:10001
  blendprune resume runs/digits-resnet20-20260101-120000
  blendprune front <mlflow-run-id>
  blendprune export <mlflow-run-id> --rank 0 --out model.pt
"""


class UsageError(ValueError):
    """Bad command-line input (exit 2)."""


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default=None,
                   help="YAML file or preset name (see `blendprune presets`); default: digits")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set search.population=32 (repeatable)")


def _add_tracking_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: tracking.uri, else MLFLOW_TRACKING_URI, "
                        "else MLflow's default local store)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blendprune", description="Evolutionary search over blended filter-importance "
        "criteria and per-layer pruning ratios; results in MLflow.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks of failures")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("search", help="run a search and its final stage",
                       description="Prepare the base model and ScoreTable, search genomes on "
                       "Ray, record every candidate and the Pareto front in MLflow, then "
                       "fine-tune and export the best of the front.")
    _add_config_args(p)
    _add_tracking_arg(p)
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (default: ray.address, else RAY_ADDRESS, "
                        "else a local Ray on 127.0.0.1)")
    p.add_argument("--output-dir", default=None,
                   help="folder for run folders (default: output_dir, 'runs')")
    p.add_argument("--dry-run", action="store_true",
                   help="validate the config and inputs, print the resolved config, exit")

    p = sub.add_parser("resume", help="continue an interrupted search in its MLflow run",
                       description="Continue a search from its run folder (or the MLflow "
                       "parent run id): finished candidates are kept, the rest run; results "
                       "the tracking server missed are sent.")
    p.add_argument("run", help="run folder or MLflow parent run id")
    _add_tracking_arg(p)
    p.add_argument("--address", default=None, help="Ray cluster to join")

    p = sub.add_parser("train", help="train the base model of a config, or a compact one "
                       "by a training mode (dcff, cdp, lapp)",
                       description="--method base: train the base model the config describes, "
                       "report its test accuracy, and save it (also cached for later "
                       "searches). --method dcff: train a compact network by dynamic-coded "
                       "filter fusion (config section dcff). --method cdp: sparse training "
                       "with filter skeletons and dynamic thresholds to a FLOPs target "
                       "(config section cdp). --method lapp: learnt per-layer thresholds "
                       "under a FLOPs-constraint loss, with bypasses (config section lapp). "
                       "A training mode is tracked in MLflow, and the "
                       "same command resumes after a kill.")
    _add_config_args(p)
    p.add_argument("--method", choices=["base", *list_modes()], default="base",
                   help="what to train (default: base)")
    p.add_argument("--from", dest="source", default=None, metavar="RUN",
                   help="a training mode: start from a front member of this search (run "
                        "folder or MLflow run id), with the search's config (dcff: its "
                        "plan; cdp, lapp: its FLOPs ratio as the target)")
    p.add_argument("--rank", type=int, default=0,
                   help="with --from: the front member, 0 = the most accurate")
    p.add_argument("--out", default=None, help="also copy the checkpoint to this file")
    _add_tracking_arg(p)

    p = sub.add_parser("front", help="print the Pareto front of a search; write its plot")
    p.add_argument("run", help="MLflow parent run id or run folder")
    _add_tracking_arg(p)
    p.add_argument("--plot", nargs="?", const="", default="", metavar="PATH",
                   help="where to write the plot (default, or --plot alone: "
                   "front-<run>.png)")

    p = sub.add_parser("export", help="copy a final-stage model out of a search")
    p.add_argument("run", help="MLflow parent run id or run folder")
    p.add_argument("--rank", type=int, default=0, help="final-stage rank (0 = most accurate)")
    p.add_argument("--format", choices=["pt", "onnx", "safetensors"], default="pt",
                   help="pt: for pruning.load_pruned; onnx: checked against torch with "
                   "onnxruntime, size and latency reported; safetensors: weights and a JSON "
                   "plan in the folder --out, rebuilt without pickle (load_portable)")
    p.add_argument("--out", required=True, help="destination file (a folder for safetensors)")
    _add_tracking_arg(p)

    p = sub.add_parser("register", help="register a final-stage model of a search in the "
                       "MLflow model registry")
    p.add_argument("run", help="MLflow parent run id or run folder")
    p.add_argument("--rank", type=int, default=0, help="final-stage rank (0 = most accurate)")
    p.add_argument("--name", required=True, help="registered model name (a new version if "
                   "it exists)")
    _add_tracking_arg(p)

    sub.add_parser("presets", help="list the built-in presets")
    return parser


# -- helpers ---------------------------------------------------------------------------
def _tracking_uri(arg: str | None, cfg_uri: str | None) -> str | None:
    return arg or cfg_uri or os.environ.get("MLFLOW_TRACKING_URI") or None


def _print_how_to_open(uri: str | None, parent: str | None, run_path: Path,
                       experiment_id: str | None = None) -> None:
    import mlflow

    from .redaction import redact

    resolved = redact(uri or mlflow.get_tracking_uri())
    shown = redact(uri) if uri else None
    from .review import links

    print(f"\nrun folder: {run_path}")
    print(f"MLflow run: {parent}")
    base = resolved.rstrip("/")
    if not resolved.startswith(("http://", "https://")):
        print(f"open: mlflow ui --backend-store-uri {resolved} --host 127.0.0.1")
        base = "http://127.0.0.1:5000"
    if parent is not None and experiment_id is not None:
        for what, url in links(base, experiment_id, parent).items():
            print(f"  {what}: {url}")
    print(f"front: blendprune front {parent}" + (f" --tracking-uri {shown}" if shown else ""))


def _resolve_run(run: str, uri: str | None) -> tuple[Path | None, str | None, str | None]:
    """(run folder or None, parent run id or None, tracking uri) for a folder or run id."""
    from .rundir import RunDir

    path = Path(run)
    if RunDir(path).exists():
        state = RunDir(path).state()
        return path, state.get("parent_run_id"), uri or state.get("tracking_uri")
    if os.path.sep in run or path.exists():
        raise UsageError(f"run: {run!r} is not a blendprune run folder (no config.yaml)")
    from .tracking import check_tracking, client

    check_tracking(uri)
    try:
        parent = client(uri).get_run(run)
    except Exception:
        raise UsageError(f"run: no MLflow run {run!r} at {uri or 'the default store'}") from None
    if parent.data.tags.get("blendprune.role") != "search":
        raise UsageError(f"run: MLflow run {run!r} is not a blendprune search")
    folder = parent.data.tags.get(RUN_DIR_TAG)
    local = Path(folder) if folder and (Path(folder) / "config.yaml").exists() else None
    return local, run, uri


def format_front(rows: list[dict[str, Any]]) -> str:
    """The front as a table, best accuracy first."""
    head = f"{'rank':>4} {'index':>5} {'accuracy':>8} {'FLOPs':>10} {'FLOPs%':>6} " \
           f"{'params':>9} {'param%':>6}  seed"
    lines = [head, "-" * len(head)]
    for rank, r in enumerate(sorted(rows, key=lambda r: -r["accuracy"])):
        lines.append(f"{rank:>4} {r['index']:>5} {r['accuracy']:>8.4f} {r['flops']:>10,} "
                     f"{100 * r['flops_ratio']:>6.1f} {r['params']:>9,} "
                     f"{100 * r['params_ratio']:>6.1f}  "
                     f"{r.get('seed') or ''}")
    return "\n".join(lines)


# -- commands --------------------------------------------------------------------------
def cmd_search(args: argparse.Namespace) -> int:
    from .prepare import validate

    cfg = load_config(args.config, args.overrides)
    if args.output_dir:
        cfg = cfg.model_copy(update={"output_dir": args.output_dir})
    inputs = validate(cfg)  # every input check happens before anything is written
    if args.dry_run:
        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    uri = _tracking_uri(args.tracking_uri, cfg.tracking.uri)
    from .ray_session import check_ray
    from .tracking import Tracker, check_tracking

    check_ray(args.address or cfg.ray.address)
    check_tracking(uri)
    from .rundir import RunDir

    run = RunDir.create(cfg.output_dir, cfg.name, cfg.to_dict())
    tracker = Tracker(uri, cfg.tracking.experiment)
    tracker.start(cfg.name, cfg.flat(), run.config_path.read_text(),
                  tags={RUN_DIR_TAG: str(run.path.resolve())})
    print(f"run folder: {run.path}   MLflow run: {tracker.parent_id}", flush=True)
    return _execute(cfg, run, inputs, tracker, args.address, resume_state=None)


def _execute(cfg: Config, run: RunDir, inputs: Inputs, tracker: Tracker, address: str | None,
             resume_state: dict[str, Any] | None) -> int:
    from .final_stage import final_stage
    from .pipeline import Search, prepare_workspace
    from .ray_session import init_ray
    from .review import describe

    try:
        init_ray(address or cfg.ray.address, cfg.ray.num_cpus)
        prepared = prepare_workspace(inputs, on_ray=True)
        search = Search(cfg, run, prepared, tracker)
        search.report_clusters()
        rows = search.run_search(resume_state)
        print("\nPareto front (holdout accuracy; FLOPs count multiply-accumulates):")
        print(format_front(rows))
        finals: list[dict[str, Any]] = []
        if cfg.final.top_k and rows:
            print(f"\nfinal stage: fine-tuning the top {min(cfg.final.top_k, len(rows))} for "
                  f"{cfg.final.epochs} epochs", flush=True)
            finals = final_stage(cfg, prepared, run, tracker, rows)
            search.plot_front(finals)
        base = finals[0]["base_test_accuracy"] if finals else None
        tracker.review(run.records(), rows, finals,
                       describe(cfg, rows, finals, base, str(run.path.resolve())))
    except BaseException:
        tracker.finish("KILLED" if sys.exc_info()[0] is KeyboardInterrupt else "FAILED")
        raise
    tracker.finish("FINISHED")
    _print_how_to_open(tracker.uri, tracker.parent_id, run.path, tracker.experiment_id)
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from .prepare import validate
    from .rundir import RunDir
    from .tracking import Tracker, check_tracking

    path, parent, uri = _resolve_run(args.run, args.tracking_uri)
    if path is None:
        raise UsageError(f"run: the run folder of {args.run!r} is not on this machine; "
                         "resume from the machine that ran it")
    run = RunDir(path)
    state = run.state()
    try:
        cfg = Config.model_validate(run.config())
    except Exception as exc:
        raise UsageError(f"run: {run.config_path} is not a valid config ({exc})") from None
    inputs = validate(cfg)
    from .ray_session import check_ray

    check_ray(args.address or cfg.ray.address)
    check_tracking(uri)
    tracker = Tracker(uri, state.get("experiment", cfg.tracking.experiment))
    if parent:
        tracker.attach(parent)
    else:  # the server was down when the search began: start its parent run now
        tracker.start(cfg.name, cfg.flat(), run.config_path.read_text(),
                      tags={RUN_DIR_TAG: str(run.path.resolve())})
    done = len(run.records())
    print(f"resuming {run.path}: {done}/{cfg.search.budget} candidates finished; "
          f"MLflow run {tracker.parent_id}", flush=True)
    return _execute(cfg, run, inputs, tracker, args.address,
                    resume_state=state if state.get("strategy") else None)


def cmd_train(args: argparse.Namespace) -> int:
    from .prepare import ensure_base_model, validate

    if args.source is not None:
        if args.method == "base" or args.config is not None:
            raise UsageError("--from: only with a training mode (--method "
                             f"{'|'.join(list_modes())}), and instead of a config")
        return _train_mode(*_front_member(args))
    cfg = load_config(args.config, args.overrides)
    if args.method != "base":
        return _train_mode(cfg, args)
    if cfg.model.checkpoint is not None:
        raise UsageError("model.checkpoint: train builds a base model; unset the checkpoint")
    inputs = validate(cfg)
    path = ensure_base_model(inputs)
    acc = inputs.test_accuracy(inputs.model)
    print(f"base model: {path}\ntest accuracy: {acc:.4f}")
    if args.out:
        shutil.copyfile(path, args.out)
        print(f"copied to {args.out}")
    return 0


def _front_member(args: argparse.Namespace) -> tuple[Config, argparse.Namespace, Any]:
    """The config and plan of front member `--rank` of the search `--from`."""
    from pruning import Plan

    from .rundir import RunDir

    path, _, _ = _resolve_run(args.source, args.tracking_uri)
    if path is None:
        raise UsageError(f"--from: the folder of run {args.source!r} is not on this machine")
    front = path / "pareto" / "front.json"
    rows = json.loads(front.read_text())["front"] if front.exists() else []
    ranked = sorted(rows, key=lambda r: -r["accuracy"])
    if not 0 <= args.rank < len(ranked):
        raise UsageError(f"--rank: {args.rank} is not on the front of {path} "
                         f"({len(ranked)} members)")
    run = RunDir(path)
    record = {r["index"]: r for r in run.records()}[ranked[args.rank]["index"]]
    cfg = load_config(str(run.config_path), args.overrides)
    return cfg, args, Plan.from_dict(record["result"]["plan"])


def _train_mode(cfg: Config, args: argparse.Namespace, plan: Any = None) -> int:
    from .prepare import ensure_base_model, validate
    from .tracking import Tracker, check_tracking
    from .training_mode import get_mode, run_mode

    mode = get_mode(args.method)
    inputs = validate(cfg)
    if plan is None:
        mode.check(cfg, inputs)
    uri = _tracking_uri(args.tracking_uri, cfg.tracking.uri)
    check_tracking(uri)  # every check before anything is written or trained
    if mode.init(cfg) == "base":
        ensure_base_model(inputs)
    result = run_mode(args.method, cfg, inputs, Tracker(uri, cfg.tracking.experiment),
                      plan=plan)
    if args.out:
        shutil.copyfile(result["path"], args.out)
        print(f"copied to {args.out}")
    return 0


def cmd_front(args: argparse.Namespace) -> int:
    path, parent, uri = _resolve_run(args.run, args.tracking_uri)
    rows: list[dict[str, Any]] | None = None
    plot_src: Path | None = None
    if path is not None:
        _push_unsent(path, parent, uri)
        front = path / "pareto" / "front.json"
        if front.exists():
            rows = json.loads(front.read_text())["front"]
            plot_src = path / "pareto" / "front.png"
    if rows is None:
        from .tracking import download

        try:
            if parent is None:
                raise LookupError(args.run)
            local = download(uri, parent, "pareto")
        except Exception:
            raise UsageError(f"run: {args.run!r} has no pareto/front.json yet") from None
        rows = json.loads((local / "front.json").read_text())["front"]
        plot_src = local / "front.png"
    print(format_front(rows))
    label = parent or (path.name if path is not None else "run")
    out = Path(args.plot or f"front-{label}.png")
    if plot_src is not None and plot_src.exists():
        shutil.copyfile(plot_src, out)
        print(f"plot: {out}")
    return 0


def _push_unsent(path: Path, parent: str | None, uri: str | None) -> None:
    """Send candidates the tracking server missed during the search."""
    from .rundir import RunDir
    from .tracking import Tracker

    run = RunDir(path)
    records = run.records()
    unsent = sum(r.get("run_id") is None for r in records)
    if not unsent or parent is None:
        return
    tracker = Tracker(uri, run.state().get("experiment", "blendprune"))
    tracker.attach(parent)
    missing = tracker.send_missing(records, run.append)
    print(f"sent {unsent - missing} of {unsent} candidates the tracking server had missed")


def cmd_export(args: argparse.Namespace) -> int:
    path, parent, uri = _resolve_run(args.run, args.tracking_uri)
    src: Path | None = None
    if path is not None:
        src = path / "final" / str(args.rank) / "model.pt"
        if not src.exists():
            have = sorted(p.name for p in (path / "final").glob("*")) if \
                (path / "final").exists() else []
            raise UsageError(f"--rank: {args.rank} has no final model (ranks: "
                             f"{', '.join(have) or 'none'})")
    else:
        from .tracking import download

        try:
            if parent is None:
                raise LookupError(args.run)
            src = download(uri, parent, f"final/{args.rank}/model.pt")
        except Exception:
            raise UsageError(f"--rank: {args.rank} has no final model in run {parent}") from None
    from .export_formats import export

    lines = export(src, args.format, Path(args.out))
    print(f"exported rank {args.rank} as {args.format}:\n  " + "\n  ".join(lines))
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    import mlflow

    from .tracking import download

    path, parent, uri = _resolve_run(args.run, args.tracking_uri)
    summary = path / "final" / "summary.json" if path is not None else None
    try:
        if summary is None or not summary.exists():
            if parent is None:
                raise LookupError(args.run)
            summary = download(uri, parent, "final/summary.json")
        finals = json.loads(summary.read_text())["final"]
    except Exception:
        raise UsageError(f"run: {args.run} has no final stage to register from") from None
    uris = {f["rank"]: f.get("model_uri") for f in finals}
    if uris.get(args.rank) is None:
        raise UsageError(f"--rank: {args.rank} has no logged model (ranks: "
                         f"{', '.join(str(r) for r, u in uris.items() if u) or 'none'})")
    if uri:
        mlflow.set_tracking_uri(uri)
    version = mlflow.register_model(uris[args.rank], args.name)
    print(f"registered rank {args.rank} as {args.name} version {version.version}: load with "
          f"mlflow.pytorch.load_model('models:/{args.name}/{version.version}')")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    for name in list_presets():
        text = preset_path(name).read_text()
        about = next((ln[1:].strip() for ln in text.splitlines() if ln.startswith("#")), "")
        print(f"{name:<26} {about}")
    return 0


COMMANDS = {"search": cmd_search, "resume": cmd_resume, "train": cmd_train,
            "front": cmd_front, "export": cmd_export, "register": cmd_register,
            "presets": cmd_presets}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .ray_session import RayUnavailable
    from .redaction import redact
    from .tracking import TrackingUnavailable

    try:
        return COMMANDS[args.command](args)
    except (ConfigError, UsageError) as exc:
        print(redact(f"error: {exc}"), file=sys.stderr)
        return 2
    except (TrackingUnavailable, RayUnavailable) as exc:
        print(redact(f"error: {exc}"), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; continue with `blendprune resume RUN_FOLDER`", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            traceback.print_exc()
        print(redact(f"error: {type(exc).__name__}: {exc}"), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
