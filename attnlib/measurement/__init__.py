"""Measurement: windows (`measure`), idle baseline, interleaved trials, peak calibration."""

from .base import GPUBackend, NullGPUs, Unavailable
from .calibrate import BandwidthCalibration, Calibration, calibrate_bandwidth, calibrate_peak
from .ranks import measure_ranks, sum_over_ranks
from .stats import RatioInterval, Summary, paired_ratio, summarize
from .steady import SteadyState, SteadyStateConfig, reach_steady_state
from .trials import Candidate, TrialsResult, round_orders, run_trials
from .window import IdleBaseline, Measurement, energy_between, measure, measure_idle

__all__ = ["BandwidthCalibration", "Calibration", "Candidate", "GPUBackend", "IdleBaseline", "Measurement", "NullGPUs",
           "RatioInterval", "SteadyState", "SteadyStateConfig", "Summary", "TrialsResult", "Unavailable",
           "calibrate_bandwidth", "calibrate_peak", "energy_between", "measure", "measure_idle", "measure_ranks",
           "paired_ratio", "reach_steady_state", "round_orders", "run_trials", "sum_over_ranks", "summarize"]
