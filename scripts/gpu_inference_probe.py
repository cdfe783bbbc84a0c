"""A quick GPU probe of the inference job's code paths (not a measurement for the paper): sdpa at one prefill
and one decode cell in three modes (cudagraph, eager, graph), and transformers' generate, one short window each; results into $OUT/raw.

    python scripts/gpu_inference_probe.py [variant]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from attnlib.experiments.inference import InferenceConfig, run_inference_job
from attnlib.experiments.training import TrainConfig
from attnlib.results import results_frame

variant = sys.argv[1] if len(sys.argv) > 1 else "sdpa"
out = Path(os.environ.get("OUT", "/tmp")) / "raw"
config = InferenceConfig(train=TrainConfig(variant=variant), prefill_lens=[512], decode_batch_sizes=[1],
                         decode_context_lens=[512], other_decode_cells={"eager": [[1, 512]], "graph": [[1, 512]]}, trials=1, window_s=0.5,
                         warmup_reps=1, idle_s=0.5)
frame = results_frame(run_inference_job(config, out, progress=False))
frame["ms_per_rep"] = 1000 * frame.wall_s / frame.repetitions
columns = ["phase", "mode", "batch_size", "status", "repetitions", "ms_per_rep", "gpu_j_per_token", "first_call_s",
           "cache_bytes", "cache_allocated_bytes", "error"]
print(frame[[c for c in columns if c in frame]].to_string())
