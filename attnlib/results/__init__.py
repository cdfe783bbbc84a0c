"""Typed results (`schema`), their files and the one loader (`store`)."""

from .schema import (RESULT_KINDS, SCHEMA_VERSION, STATUSES, ComponentResult, DistributedResult, InferenceResult, LayerResult, ModelInfo, Provenance, QualityResult, RecallResult,
                     Result, SweepResult, TrialResult)
from .store import (finished_result, is_complete, load_results, newest_result_epoch, read_result, read_run,
                    results_frame, set_aside, write_result)

__all__ = ["RESULT_KINDS", "SCHEMA_VERSION", "STATUSES", "ComponentResult", "DistributedResult", "InferenceResult", "LayerResult", "ModelInfo", "Provenance", "QualityResult", "RecallResult",
           "Result", "SweepResult", "TrialResult", "finished_result", "is_complete", "load_results", "newest_result_epoch", "read_result", "read_run", "results_frame",
           "set_aside", "write_result"]
