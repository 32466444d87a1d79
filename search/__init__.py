"""blendprune's orchestration half: config, strategies, Ray execution, MLflow tracking, CLI."""

from .strategy import Strategy, get_strategy, list_strategies, register_strategy

__all__ = ["Strategy", "get_strategy", "list_strategies", "register_strategy"]
