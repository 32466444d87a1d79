"""blendprune's library half: models, data, criteria, blending, surgery, cost, training.

Pure functions and modules over torch and torch-pruning; nothing here knows about the
search (Ray, MLflow, DEAP, Optuna live in `search/`).
"""

from .blending import Blender, GroupClustering, cluster_group, rank_normalise
from .candidate import CandidateResult, EvalSettings, Evaluator, Fidelity
from .cdp import CDP, SkeletonConv2d, scratch_init
from .cost import CostModel, count_cost, measure_latency
from .criteria import Criterion, get_criterion, list_criteria, register_criterion
from .data import (
    Data,
    ImageData,
    get_dataset,
    holdout_split,
    list_datasets,
    load_dataset,
    materialize,
    register_dataset,
)
from .dcff import DCFF, FusedConv2d
from .export import load_pruned, save_pruned
from .folder import FolderLoader, FolderSplit, ImageFolderData
from .fusion import fusion_matrix, kl_importance
from .genome import Decoder, GenomeLayout
from .lapp import LAPP
from .loader import Loader, Split, TensorLoader, TensorSplit
from .models import create_model, get_model, list_models, load_checkpoint, register_model
from .plan import Plan, decode_plan, keep_count, ratio_slots, top_channels
from .prune import PruneReport, prune
from .scores import DEFAULT_POOL, ScoreTable, compute_scores
from .surgery import ChannelGroup, GroupMap, apply_plan, classifier_layers
from .targets import Targets
from .train import Distill, DivergedError, TrainHooks, adaptive_bn, evaluate, finetune, train

__all__ = [
    "CDP",
    "DCFF",
    "LAPP",
    "DEFAULT_POOL",
    "Blender",
    "CandidateResult",
    "ChannelGroup",
    "CostModel",
    "Decoder",
    "Criterion",
    "Data",
    "DivergedError",
    "Distill",
    "EvalSettings",
    "Evaluator",
    "Fidelity",
    "FolderLoader",
    "FusedConv2d",
    "FolderSplit",
    "GenomeLayout",
    "GroupClustering",
    "GroupMap",
    "ImageData",
    "ImageFolderData",
    "Loader",
    "Plan",
    "PruneReport",
    "ScoreTable",
    "SkeletonConv2d",
    "Split",
    "Targets",
    "TensorLoader",
    "TensorSplit",
    "TrainHooks",
    "adaptive_bn",
    "apply_plan",
    "classifier_layers",
    "cluster_group",
    "compute_scores",
    "count_cost",
    "create_model",
    "decode_plan",
    "evaluate",
    "finetune",
    "fusion_matrix",
    "kl_importance",
    "get_criterion",
    "get_dataset",
    "get_model",
    "holdout_split",
    "keep_count",
    "list_criteria",
    "list_datasets",
    "list_models",
    "load_checkpoint",
    "load_dataset",
    "load_pruned",
    "materialize",
    "measure_latency",
    "rank_normalise",
    "prune",
    "ratio_slots",
    "register_criterion",
    "register_dataset",
    "register_model",
    "save_pruned",
    "scratch_init",
    "top_channels",
    "train",
]
