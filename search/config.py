"""The run configuration (design §4): one validated model per section, every key defaulted.

Errors are `ConfigError`s with one line naming the key and the bad value; the CLI turns
them into exit status 2 before anything is written.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pruning import get_dataset, list_criteria, list_datasets
from pruning.scores import DEFAULT_POOL

from .strategy import get_strategy, list_strategies

__all__ = ["Config", "ConfigError", "list_presets", "load_config", "preset_path"]


class ConfigError(ValueError):
    """Invalid user input; the message is one line naming the key and the value."""


def _resolvable(get: Callable[[str], object], key: str, name: str) -> str:
    """`name` if its registry resolves it; else the registry's message, minus the key
    (pydantic's error already names it)."""
    try:
        get(name)
    except ValueError as exc:
        raise ValueError(str(exc).removeprefix(f"{key}: ")) from None
    return name


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Section):
    arch: str = Field("resnet20", description="registry name or 'module:function'")
    checkpoint: str | None = Field(None, description="state dict to prune; null trains one")


class DataConfig(_Section):
    dataset: str = Field("digits", description="dataset reader: "
                         + ", ".join(list_datasets()) + ", or 'module:function'")
    root: str | None = Field(None, description="folder (or .npz file) holding the dataset")
    holdout: float = Field(0.1, gt=0, description="fraction (<1) or count of training "
                                                  "images held out for candidate selection")
    seed: int = Field(0, description="seed of the holdout split")
    in_memory: bool = Field(False, description="decode a streamed dataset (imagefolder) "
                                               "into memory once instead of streaming it")
    image_size: int | None = Field(None, ge=8, description="side of the crops a streamed "
                                                           "dataset is read at (224 if null)")
    workers: int | None = Field(None, ge=0, description="decoding processes of a streamed "
                                                        "dataset (null: cores - 1, at most 8)")

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        return _resolvable(get_dataset, "data.dataset", name)


class BaseTrainingConfig(_Section):
    epochs: int = Field(30, ge=1, description="epochs when no checkpoint is given")
    lr: float = Field(0.1, gt=0, description="peak SGD learning rate (one-cycle)")
    batch_size: int = Field(128, ge=1, description="training batch size")
    seed: int = Field(0, description="seed of the initialisation and data order")


class CriteriaConfig(_Section):
    pool: list[str] = Field(default_factory=lambda: list(DEFAULT_POOL), min_length=1,
                            description="importance criteria to blend, from: "
                                        + ", ".join(sorted(list_criteria())))
    batches: int = Field(8, ge=1, description="training batches for data-driven criteria")
    cluster_threshold: float = Field(0.1, ge=0, le=2,
                                     description="cut of average-linkage clustering on 1-rho")

    @field_validator("pool")
    @classmethod
    def _known(cls, pool: list[str]) -> list[str]:
        known = set(list_criteria())
        for name in pool:
            if name not in known:
                raise ValueError(f"unknown criterion {name!r}; known: "
                                 f"{', '.join(sorted(known))}")
        if len(set(pool)) != len(pool):
            raise ValueError("a criterion appears twice")
        return pool


class GenomeConfig(_Section):
    encoding: Literal["ratio", "threshold"] = Field(
        "ratio", description="a gene is a layer's pruning ratio, or a score threshold")
    granularity: Literal["group", "stage", "stage_role"] = Field(
        "group", description="one gene per prunable group, per stage of equal width, or "
                             "per stage and role (residual width, internal widths)")
    alpha: Literal["criterion", "cluster"] = Field(
        "criterion", description="one calibration factor per criterion, or per cluster of "
                                 "criteria that agree over the whole model (fewer genes)")
    max_ratio: float = Field(0.8, ge=0, lt=1, description="upper bound of every ratio gene")
    min_channels: int = Field(4, ge=1, description="channels every layer keeps at least")
    round_to: int = Field(1, ge=1, description="kept channels are rounded to a multiple")
    levels: int = Field(0, ge=0, description="ratio genes snap to this many steps up to "
                                             "max_ratio (0: continuous)")
    keep: Literal["select", "fuse"] = Field(
        "select", description="drop pruned filters, or fuse them into the kept ones (DCFF)")


class ConstraintsConfig(_Section):
    max_flops_ratio: float = Field(1.0, gt=0, le=1,
                                   description="feasible candidates keep at most this "
                                               "fraction of the base model's FLOPs")
    flops_targets: list[float] | None = Field(
        None, min_length=1, description="prune every candidate onto one of these FLOPs "
                                        "ratios (a gene picks which): candidates compete at "
                                        "the FLOPs asked for")
    min_flops_ratio: float | None = Field(
        None, gt=0, le=1, description="with max_flops_ratio, a range every candidate is "
                                      "pruned onto (a gene picks where)")

    @field_validator("flops_targets")
    @classmethod
    def _targets(cls, targets: list[float] | None, info: ValidationInfo) -> list[float] | None:
        if targets is None:
            return None
        if targets != sorted(set(targets)):
            raise ValueError("must be ascending and distinct")
        budget = info.data.get("max_flops_ratio", 1.0)
        if not (0 < targets[0] and targets[-1] <= budget):
            raise ValueError(f"every target must be in (0, max_flops_ratio={budget}]")
        return targets

    @field_validator("min_flops_ratio")
    @classmethod
    def _range(cls, lo: float | None, info: ValidationInfo) -> float | None:
        if lo is not None and info.data.get("flops_targets") is not None:
            raise ValueError("give flops_targets or min_flops_ratio, not both")
        budget = info.data.get("max_flops_ratio", 1.0)
        if lo is not None and lo >= budget:
            raise ValueError(f"must be below max_flops_ratio={budget}")
        return lo


class EvaluationConfig(_Section):
    bn_batches: int = Field(20, ge=0, description="batches that re-estimate BN statistics")
    finetune_steps: int = Field(50, ge=0, description="SGD steps of the brief fine-tune")
    lr: float = Field(0.01, gt=0, description="fine-tune learning rate")
    batch_size: int = Field(128, ge=1, description="fine-tune and evaluation batch size")
    latency: bool = Field(False, description="also measure each candidate's latency")
    channels_last: bool = Field(True, description="fine-tune and score candidates in "
                                "channels-last memory format (faster convolutions)")
    distill: float = Field(0.0, ge=0, lt=1, description="weight of distillation from the "
                           "base model in each candidate's brief fine-tune (0: off)")


class SearchConfig(_Section):
    algorithm: str = Field("optuna-tpe", description="search strategy: "
                           + ", ".join(list_strategies()) + ", or 'module:Class'")
    population: int = Field(16, ge=4, description="candidates per generation (optuna-tpe: "
                            "per reporting block; after the seeds, a quarter of one are "
                            "random start-up trials)")
    generations: int = Field(4, ge=1, description="budget = population x generations")
    seed: int = Field(0, description="seed of the strategy")
    workers: int = Field(2, ge=1, description="candidates evaluated at once (Ray actors)")
    gpus_per_trial: float = Field(0, ge=0, le=1, description="GPU share per worker; 0.25 "
                                                             "packs 4 on a GPU")
    executor: Literal["actors", "tune"] = Field(
        "actors", description="resident Ray actors fed by the driver, or Ray Tune trials")
    max_restarts: int = Field(2, ge=0, description="restarts of a worker that dies (native "
                                                   "crash, CUDA error, lost node)")
    screen: bool = Field(False, description="first score each criterion cluster alone "
                                            "after adaptive BN only; leave out the clearly "
                                            "worse ones")
    screen_margin: float = Field(0.05, ge=0, le=1, description="accuracy below the best "
                                                             "screened cluster that drops one")
    halving: int = Field(1, ge=1, description="successive halving: breed this many times the "
                                              "population, score all at a cheap rung, "
                                              "evaluate the best of each FLOPs target in "
                                              "full (1: off; deap-nsga2 on actors)")
    halving_steps: int = Field(0, ge=0, description="fine-tune steps of the cheap rung (0: "
                                                    "adaptive BN alone)")
    seed_plans: list[str] = Field(
        default_factory=list, description="plans whose per-layer widths seed the first "
        "generation: model files of `blendprune train --method lapp|cdp|dcff`, or plan JSON "
        "files (group -> kept channels)")
    crossover_eta: float = Field(15.0, gt=0, description="SBX crossover distribution index")
    mutation_eta: float = Field(20.0, gt=0, description="polynomial mutation index")
    crossover_prob: float = Field(0.9, ge=0, le=1, description="crossover probability")

    @field_validator("algorithm")
    @classmethod
    def _known_algorithm(cls, name: str) -> str:
        return _resolvable(get_strategy, "search.algorithm", name)

    @field_validator("halving")
    @classmethod
    def _halving_runs_here(cls, eta: int, info: ValidationInfo) -> int:
        algorithm, executor = info.data.get("algorithm"), info.data.get("executor")
        if eta > 1 and (algorithm != "deap-nsga2" or executor != "actors"):
            raise ValueError(f"needs search.algorithm deap-nsga2 on executor actors, not "
                             f"{algorithm} on {executor}")
        return eta

    @property
    def budget(self) -> int:
        return self.population * self.generations


class FinalConfig(_Section):
    top_k: int = Field(3, ge=0, description="front members fine-tuned and tested at the end")
    epochs: int = Field(5, ge=0, description="epochs of the final fine-tune")
    lr: float = Field(0.01, gt=0, description="final fine-tune learning rate")
    seeds: int = Field(2, ge=1, description="fine-tunes per top-k member, each with its own "
                       "batch order: test accuracy is their mean, the spread is reported, "
                       "the first seed's model is exported")
    registered_model: str | None = Field(
        "", description="registered model the final-stage models become versions of "
        "(empty: <name>-<parent run id prefix>, one per search; null: not registered)")
    distill: float = Field(0.5, ge=0, lt=1, description="weight of distillation from the "
                           "base model in the final fine-tune or training mode (0: off)")
    method: str = Field(
        "finetune", description="how the top-k are finished: a fine-tune, or a training "
        "mode (dcff: filter fusion of the member's plan; cdp: sparse training to the "
        "member's FLOPs; options from that mode's section)")

    @field_validator("method")
    @classmethod
    def _known_method(cls, method: str) -> str:
        from .training_mode import list_modes  # it imports this module

        if method not in ("finetune", *list_modes()):
            raise ValueError(f"must be finetune or one of {list_modes()}, got {method!r}")
        return method


class DcffConfig(_Section):
    """`blendprune train --method dcff` (seed-methods.md §1)."""

    epochs: int = Field(10, ge=1, description="training epochs (the paper: 300)")
    lr: float = Field(0.01, gt=0, description="peak SGD learning rate (cosine to zero)")
    init: Literal["base", "scratch"] = Field(
        "base", description="bank from the trained base model, or trained from scratch")
    target_flops_ratio: float = Field(0.5, gt=0, lt=1, description="FLOPs kept, at one "
                                      "uniform rate, when neither rates nor preset is given")
    rates: list[float] | None = Field(None, description="one pruning rate per channel group, "
                                      "in the order of their first layer in the model")
    preset: Literal["vgg16", "resnet56"] | None = Field(
        None, description="the DCFF paper's published rates for that model")
    distance: Literal["raw", "mean"] = Field("raw", description="filter distances as they "
                                             "are, or over their mean")
    score_update: Literal["every_epoch", "freeze_nonfinite"] = Field(
        "every_epoch", description="re-choose the kept filters every epoch (exact KL), or "
        "keep the last finite scores as the official code does (frozen from epoch 1)")
    t_start: float | None = Field(None, gt=0, description="temperature at epoch 0 (default: "
                                  "the paper's 1 from scratch; from the base, the one at "
                                  "which each filter keeps half its own weight)")
    t_end: float = Field(1e4, gt=0, description="temperature at the last epoch")

    @field_validator("rates")
    @classmethod
    def _rates_in_range(cls, rates: list[float] | None) -> list[float] | None:
        bad = [r for r in rates or [] if not 0 <= r < 1]
        if bad:
            raise ValueError(f"every rate must be in [0, 1), got {bad[0]}")
        return rates


class CdpConfig(_Section):
    """`blendprune train --method cdp` (seed-methods.md §2)."""

    epochs: int = Field(10, ge=1, description="training epochs (the public code: 160)")
    lr: float = Field(0.01, gt=0, description="peak SGD learning rate (cosine to zero)")
    init: Literal["base", "scratch"] = Field(
        "base", description="start from the trained base model, or from scratch (BN scale "
        "0.5, as the public code)")
    target_flops_ratio: float = Field(0.5, gt=0, le=1, description="FLOPs kept at the end "
                                      "(ours: the published method has no target)")
    sparse_fraction: float = Field(0.5, gt=0, le=1, description="share of the training in "
                                   "which filters die; the rest fine-tunes the survivors")
    delta: float = Field(0.01, ge=0, description="DTC's base threshold on skeleton entries")
    prop: float | None = Field(None, gt=0, description="initial L1 strength on the "
                               "skeletons, adapted towards the FLOPs target (default: one "
                               "that alone moves a skeleton entry by 0.01 over the sparse "
                               "phase at the peak lr; the public code's is 5e-6)")
    gain: float = Field(1.2, gt=1, description="factor the L1 strength moves by when the "
                        "live FLOPs are off the schedule")
    adapt_every: int = Field(5, ge=1, description="steps between L1 strength updates")
    var: float = Field(0.0, ge=0, description="weight of the filters' texture similarity "
                       "to the layer mean")
    var2: float = Field(0.0, ge=0, description="weight of the skeletons' texture similarity "
                        "to the layer mean")
    r_prop: Literal["code", "intended"] = Field(
        "code", description="the L1 term as the public code computes it (2 prop |S|_1), or "
        "weighted by the skeleton similarity's change between steps")


class LappConfig(_Section):
    """`blendprune train --method lapp` (seed-methods.md §3: the abstract's design, the
    open choices ours). `normalise` and `balance` default to what measured best from a
    trained ResNet-20 (`benchmarks/seed_methods.py`, CIFAR-10 at 0.4 FLOPs: 81.4% against
    80.4% for the spec's max and none); the library's `LAPP` keeps the spec's."""

    epochs: int = Field(30, ge=1, description="training epochs")
    prune_epochs: float = Field(5, gt=0, description="epochs over which the FLOPs target "
                                "falls to its final value (at most all); then the masks "
                                "freeze")
    lr: float = Field(0.1, gt=0, description="peak SGD learning rate (cosine to zero)")
    init: Literal["scratch", "base"] = Field(
        "scratch", description="train from scratch (the paper), or from the base model")
    target_flops_ratio: float = Field(0.5, gt=0, le=1, description="FLOPs kept at the end")
    lam: float = Field(2.0, ge=0, description="weight of the FLOPs-constraint loss")
    temperature: float = Field(0.05, gt=0, description="sigmoid temperature of the "
                               "straight-through mask gradient")
    bypass: Literal["merge", "keep", "none"] = Field(
        "merge", description="a 1x1 bypass beside each pruned k x k conv, merged into its "
        "centre tap at the end, kept at inference, or none")
    criterion: str = Field("bn_gamma", description="channel scores: the norms' |gamma| "
                           "(learnt with the model), or any criterion, fixed at the start")
    max_ratio: float = Field(0.8, ge=0, lt=1, description="most of a channel group LAPP "
                             "may remove (as genome.max_ratio)")
    min_channels: int = Field(4, ge=1, description="channels every group keeps at least")
    normalise: Literal["max", "rank"] = Field(
        "rank", description="channel scores over their group's maximum, or their ranks in "
        "the group over its size + 1, so a threshold is the share pruned and every group's "
        "threshold feels the FLOPs loss")
    balance: Literal["none", "cost", "group"] = Field(
        "group", description="scale the FLOPs loss's gradient on each group's mask by the "
        "mean cost of a channel over the group's own (cost), or of a whole group (group: with "
        "normalise=rank every threshold feels the same push), so residual streams do not "
        "take the whole push; or not (none)")

    @field_validator("criterion")
    @classmethod
    def _known_criterion(cls, name: str) -> str:
        if name not in list_criteria():
            raise ValueError(f"unknown criterion {name!r}; known: {', '.join(list_criteria())}")
        return name


class TrackingConfig(_Section):
    experiment: str = Field("blendprune", description="MLflow experiment name")
    uri: str | None = Field(None, description="MLflow tracking URI (default: "
                                              "$MLFLOW_TRACKING_URI, else MLflow's local store)")


class RayConfig(_Section):
    address: str | None = Field(None, description="Ray cluster to join (host:port, or auto: "
                                                  "the last `ray start` here); null starts "
                                                  "a new local Ray on 127.0.0.1")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray (default: all)")


Objective = Literal["accuracy", "flops", "params", "latency"]


def _accuracy_and_flops() -> list[Objective]:
    return ["accuracy", "flops"]


class Config(_Section):
    name: str = Field("digits-resnet20", description="run name in MLflow and the run folder")
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    base_training: BaseTrainingConfig = BaseTrainingConfig()
    criteria: CriteriaConfig = CriteriaConfig()
    genome: GenomeConfig = GenomeConfig()
    objectives: list[Objective] = Field(
        default_factory=_accuracy_and_flops,
        description="accuracy first, then the costs to minimise")
    constraints: ConstraintsConfig = ConstraintsConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    search: SearchConfig = SearchConfig()
    final: FinalConfig = FinalConfig()
    dcff: DcffConfig = DcffConfig()
    cdp: CdpConfig = CdpConfig()
    lapp: LappConfig = LappConfig()
    tracking: TrackingConfig = TrackingConfig()
    ray: RayConfig = RayConfig()
    output_dir: str = Field("runs", description="where run folders (checkpoints, models) go")

    @field_validator("objectives")
    @classmethod
    def _objectives(cls, objectives: list[str]) -> list[str]:
        if objectives[:1] != ["accuracy"] or len(set(objectives)) != len(objectives):
            raise ValueError("must start with 'accuracy' and name each objective once")
        if len(objectives) < 2:
            raise ValueError("needs accuracy and at least one cost objective")
        return objectives

    @model_validator(mode="after")
    def _latency(self) -> Config:
        if "latency" in self.objectives and not self.evaluation.latency:
            object.__setattr__(self, "evaluation",
                               self.evaluation.model_copy(update={"latency": True}))
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def flat(self) -> dict[str, str]:
        """Dotted keys -> values, for MLflow params."""
        out: dict[str, str] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = ",".join(map(str, value)) if isinstance(value, list) else str(value)

        walk("", self.to_dict())
        return out


def _format(err: ValidationError) -> str:
    e = err.errors()[0]
    key = ".".join(str(p) for p in e["loc"])
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    return f"{key}: {msg} (got {e.get('input')!r})"


def _set(tree: dict[str, Any], dotted: str, raw: str) -> None:
    keys = dotted.split(".")
    if not all(keys):
        raise ConfigError(f"--set: bad key {dotted!r}")
    node = tree
    for k in keys[:-1]:
        child = node.setdefault(k, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set: {'.'.join(keys[:-1])} is not a section")
        node = child
    try:
        node[keys[-1]] = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        node[keys[-1]] = raw


def preset_path(name: str) -> Path:
    path = Path(str(resources.files("search") / "presets" / f"{name}.yaml"))
    if not path.exists():
        raise ConfigError(f"preset: unknown preset {name!r}; known: {', '.join(list_presets())}")
    return path


def list_presets() -> list[str]:
    folder = resources.files("search") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_config(source: str | None = None, overrides: list[str] | tuple[str, ...] = ()
                ) -> Config:
    """Config from a YAML file or preset name (None: the `digits` preset), plus overrides."""
    if source is None:
        source = "digits"
    path = Path(source) if (os.path.sep in source or source.endswith((".yaml", ".yml"))
                            or Path(source).is_file()) else preset_path(source)
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config: file not found: {path}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config: {path} is not valid YAML{where}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config: {path} must hold a mapping, not {type(tree).__name__}")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set: expected key=value, got {item!r}")
        _set(tree, key.strip(), value.strip())
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format(exc)) from None
