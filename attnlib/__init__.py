"""attnlib: correct attention mechanisms inside real transformers models (GPT-2, a Llama-3.2-1B-shaped decoder), and
honest measurements of what they cost."""

from . import variants  # noqa: F401  (registers every variant)
from .measurement import Candidate, Measurement, calibrate_peak, measure, measure_idle, round_orders, run_trials
from .model import attention_parameters, build_config, build_model
from .registry import VARIANTS, VariantSpec, get_variant, register, supported_variants

__all__ = ["VARIANTS", "Candidate", "Measurement", "VariantSpec", "attention_parameters", "build_config", "build_model",
           "calibrate_peak", "get_variant", "measure", "measure_idle", "register", "round_orders", "run_trials", "supported_variants"]
