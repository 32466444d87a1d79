"""Filter-importance criteria: one callable per criterion, in a registry."""

from ._activations import (
    ActivationCriterion,
    ActivationMeanCriterion,
    APoZCriterion,
    HRankCriterion,
    TaylorCriterion,
)
from ._base import Criterion, get_criterion, list_criteria, register_criterion
from ._weights import (
    BNGammaCriterion,
    DCFFKLCriterion,
    FPGMCriterion,
    L1Criterion,
    L2Criterion,
    RandomCriterion,
    TextureCriterion,
)

__all__ = [
    "APoZCriterion",
    "ActivationCriterion",
    "ActivationMeanCriterion",
    "BNGammaCriterion",
    "Criterion",
    "DCFFKLCriterion",
    "FPGMCriterion",
    "HRankCriterion",
    "L1Criterion",
    "L2Criterion",
    "RandomCriterion",
    "TaylorCriterion",
    "TextureCriterion",
    "get_criterion",
    "list_criteria",
    "register_criterion",
]
