"""Measurement: windows (`measure`), idle baseline, interleaved trials, peak calibration."""

from .base import Unavailable
from .calibrate import Calibration, calibrate_peak
from .stats import Summary, summarize
from .trials import Candidate, TrialsResult, run_trials
from .window import IdleBaseline, Measurement, energy_between, measure, measure_idle

__all__ = ["Calibration", "Candidate", "IdleBaseline", "Measurement", "Summary", "TrialsResult", "Unavailable",
           "calibrate_peak", "energy_between", "measure", "measure_idle", "run_trials", "summarize"]
