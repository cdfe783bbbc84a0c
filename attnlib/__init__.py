"""attnlib: correct attention mechanisms inside the real GPT-2, and honest measurements of what they cost."""

from . import variants  # noqa: F401  (registers every variant)
from .model import attention_parameters, build_config, build_model
from .registry import VARIANTS, VariantSpec, get_variant, register

__all__ = ["VARIANTS", "VariantSpec", "attention_parameters", "build_config", "build_model", "get_variant", "register"]
