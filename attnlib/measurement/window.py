"""`measure`: a measurement window with a synchronised begin and end, and a plain result.

    with attnlib.measure("train sdpa", tokens=n_tokens, flops=n_flops) as window:
        train_steps()
    window.result.j_per_token

At both ends the window synchronises CUDA, then reads the clock, the NVML energy counters, RAPL or CodeCarbon and
the process CPU time. A background thread samples instantaneous power (~10 Hz) for the mean/peak and for traces.
Anything that cannot be measured is `None` with a reason in `reasons`; estimates say so in their `*_source`.
Hardware sits behind `base.GPUBackend` (NVML, or the do-nothing `NullGPUs` where there is none) and RAPL /
CodeCarbon; the idle baseline is an argument, measured by `measure_idle` in the same process.
"""

from __future__ import annotations

import dataclasses
import platform
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil
import torch

from .base import GPUBackend, Unavailable
from .codecarbon_estimate import JOULES_PER_KWH, CodeCarbonTracker
from .nvml import open_nvml
from .rapl import open_rapl

SHORT_WINDOW_S = 1.0
MIN_COUNTER_UPDATES = 10  # the counter updates every 100 ms on H100/H200: 10 updates = 1 s


@dataclass
class Measurement:
    """One window's figures. Units are in the names; `None` means not measurable, see `reasons`."""

    label: str
    status: str = "ok"  # "ok" or "failed" (the block raised; what was measured is kept)
    error: str | None = None
    wall_s: float | None = None
    tokens: int | None = None
    flops: float | None = None
    # GPU energy: NVML total-energy counter, summed over the measured devices (default: the current one)
    gpu_count: int = 0
    gpu_energy_j: float | None = None
    gpu_energy_net_j: float | None = None
    gpu_energy_source: str | None = None
    idle_power_w: float | None = None
    idle_power_source: str | None = None
    energy_counter_updates: int | None = None
    # GPU power: sampled POWER_INSTANT
    gpu_power_mean_w: float | None = None  # counter energy / wall time
    gpu_power_sampled_mean_w: float | None = None
    gpu_power_peak_w: float | None = None
    gpu_power_samples: int = 0
    gpu_power_source: str | None = None
    gpu_energy_trace_j: float | None = None  # integral of the power samples: a cross-check, not the figure
    power_trace: list[tuple[float, float]] | None = None  # (s since start, W), when keep_trace=True
    # the card's state: temperature at both ends, SM clock and clock-event reasons sampled ~2 times a second
    temperature_start_c: float | None = None  # the hottest measured device
    temperature_end_c: float | None = None
    sm_clock_mean_mhz: float | None = None  # mean over the state samples and devices
    clock_event_shares: dict[str, float] = field(default_factory=dict)  # reason -> share of state samples with it
    state_samples: int = 0
    # memory
    torch_peak_mem_bytes: int | None = None
    gpu_mem_used_peak_bytes: int | None = None
    # CPU, RAM, CO2
    process_cpu_percent: float | None = None  # 100 = one core busy for the whole window
    cpu_energy_j: float | None = None
    ram_energy_j: float | None = None
    cpu_energy_source: str | None = None
    co2_kg: float | None = None
    co2_source: str | None = None
    # derived (MFU and the floor multiple need a calibrated card: attnlib.report.frames divides by it)
    tokens_per_s: float | None = None
    gpu_j_per_token: float | None = None
    gpu_j_per_token_net: float | None = None
    gpu_j_per_flop: float | None = None
    gpu_j_per_flop_net: float | None = None
    tflops: float | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)  # figure -> why it is None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class IdleBaseline:
    """Idle GPU power with a CUDA context alive (`measure_idle`); `power_w` None when not measurable."""

    power_w: float | None
    source: str
    wall_s: float


_open_windows: list["measure"] = []  # innermost last; peak-memory bookkeeping across nested windows


STATE_PERIOD_S = 0.5  # clocks and clock-event reasons: a few reads a second see a power cap that holds


class _PowerSampler(threading.Thread):
    """Samples power and the energy counter every `period_s`, the card's state (`GPUBackend.state`) every
    `STATE_PERIOD_S` and device memory every second, until stopped."""

    def __init__(self, gpus, period_s: float):
        super().__init__(daemon=True)
        self.gpus, self.period_s = gpus, period_s
        self.samples: list[tuple[float, float]] = []
        self.energy_values: set[int] = set()
        self.mem_peak_bytes = 0
        self.states: list[dict[str, list]] = []
        self._stop_event = threading.Event()
        self.t0 = time.perf_counter()

    def run(self) -> None:
        memory_every = max(1, round(1.0 / self.period_s))
        state_every = max(1, round(STATE_PERIOD_S / self.period_s))
        while not self._stop_event.is_set():
            now = time.perf_counter() - self.t0
            power_w, energy_mj = self.gpus.sample()
            self.samples.append((now, power_w))
            self.energy_values.add(energy_mj)
            if len(self.samples) % memory_every == 1 or memory_every == 1:
                self.mem_peak_bytes = max(self.mem_peak_bytes, self.gpus.memory_used_bytes())
            if len(self.samples) % state_every == 1 or state_every == 1:
                self.states.append(self.gpus.state())
            self._stop_event.wait(self.period_s)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def energy_between(start_mj: list[int], end_mj: list[int]) -> tuple[float | None, str | None]:
    """Joules between two counter reads summed over devices, or None and why (a counter that went backwards
    has wrapped or been reset; one that did not move cannot give a figure)."""
    for device, (a, b) in enumerate(zip(start_mj, end_mj)):
        if b < a:
            return None, f"energy counter of device {device} went backwards ({a} -> {b} mJ): wrapped or reset"
    total_mj = sum(b - a for a, b in zip(start_mj, end_mj))
    if total_mj == 0:
        return None, "energy counter did not advance during the window"
    return total_mj / 1000.0, None


def _synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _software_environment() -> dict[str, Any]:
    return {
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
        "system": platform.system(), "machine": platform.machine(), "cpu_count": psutil.cpu_count(),
    }


class measure:  # noqa: N801  (used as a function-like context manager, like torch.no_grad)
    """Measurement window; see the module docstring. `window.result` is a `Measurement`, also when the block
    raised (status "failed"; the exception propagates). Windows may nest.

    Args:
        label: names the window in results.
        tokens: tokens processed in the window (for tokens/s and J/token).
        flops: floating-point operations done in the window (for TFLOP/s and J/FLOP).
        idle: the idle baseline for net energy (`measure_idle`, same process); net energy is None without it.
        keep_trace: keep the (time, power) samples in `result.power_trace`.
        sample_hz: power sampling rate (the counter and POWER_INSTANT update at 10 Hz).
        codecarbon: use CodeCarbon for CPU/RAM estimates (where RAPL is missing) and CO2: True starts a tracker
            for this window (about 2 s, outside it); a started `CodeCarbonTracker` is shared, one task per window.
        country_iso_code: CodeCarbon's grid for CO2 (offline, no network).
        gpus: the GPU backend (default: NVML for the current CUDA device only, so one job's window never counts
            another card's energy; `open_nvml("all")` sums every visible card).
    """

    def __init__(self, label: str, tokens: int | None = None, flops: float | None = None, *,
                 idle: IdleBaseline | None = None, keep_trace: bool = False, sample_hz: float = 10.0,
                 codecarbon: bool | CodeCarbonTracker = True, country_iso_code: str = "USA",
                 gpus: GPUBackend | None = None):
        if not label:
            raise ValueError("label: a window needs a non-empty label")
        for name, value in (("tokens", tokens), ("flops", flops)):
            if value is not None and (not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"{name}: must be a non-negative number, got {value!r}")
        if not sample_hz > 0:
            raise ValueError(f"sample_hz: must be > 0, got {sample_hz!r}")
        self.result = Measurement(label=label, tokens=tokens, flops=flops)
        self._idle, self._keep_trace, self._period_s = idle, keep_trace, 1.0 / sample_hz
        self._gpus = gpus if gpus is not None else open_nvml()
        self._rapl = open_rapl()
        self._shared_codecarbon = isinstance(codecarbon, CodeCarbonTracker)
        self._codecarbon = (codecarbon if self._shared_codecarbon else
                            CodeCarbonTracker(country_iso_code) if codecarbon else None)

    def __enter__(self) -> "measure":
        r = self.result
        r.environment = _software_environment()
        if self._codecarbon is not None:  # its ~2 s start-up stays outside the window
            failed = self._codecarbon.start_task(r.label) if self._shared_codecarbon else self._codecarbon.start()
            if failed is not None:  # an Unavailable (falsy, so test for None)
                r.reasons["codecarbon"] = failed.reason
                self._codecarbon = None
        if self._gpus.available:
            r.gpu_count = self._gpus.count
            r.environment.update(self._gpus.environment())
            r.environment["start"] = self._gpus.state()
            self._reset_peak_memory()
            self._sampler = _PowerSampler(self._gpus, self._period_s)
        self._process = psutil.Process()
        _synchronize()
        self._cpu_start = self._process.cpu_times()
        self._rapl_start = self._rapl.read_uj() if self._rapl else None
        self._energy_start = self._gpus.energy_mj()
        self._t0 = time.perf_counter()
        if self._gpus.available:
            self._sampler.t0 = self._t0
            self._sampler.start()
        return self

    def add_work(self, tokens: int = 0, flops: float = 0.0) -> None:
        """Count work done in the window, for windows whose length is set by time rather than known up front."""
        r = self.result
        r.tokens, r.flops = (r.tokens or 0) + tokens, (r.flops or 0.0) + flops

    def gpu_j_so_far(self) -> float | None:
        """GPU energy (J, gross) from the window's start to now, read from the counter after a synchronisation: a
        point on a curve inside one window (energy to reach a loss). None without an energy counter."""
        _synchronize()
        return energy_between(self._energy_start, self._gpus.energy_mj())[0] if self._gpus.available else None

    @property
    def elapsed_s(self) -> float:
        """Seconds since the window opened (its energy reading), for work that reports its tokens at the end."""
        return time.perf_counter() - self._t0

    @property
    def power_now_w(self) -> float | None:
        """The latest sampled GPU power while the window is open (for progress bars); None without a GPU."""
        sampler = getattr(self, "_sampler", None)
        return sampler.samples[-1][1] if sampler is not None and sampler.samples else None

    def _reset_peak_memory(self) -> None:
        """Reset torch's peak counter for this window, first handing the peak so far to enclosing windows."""
        self._mem_peak_bytes = 0
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for outer in _open_windows:
                outer._mem_peak_bytes = max(outer._mem_peak_bytes, torch.cuda.max_memory_allocated())
            torch.cuda.reset_peak_memory_stats()
        _open_windows.append(self)

    def __exit__(self, exc_type, exc, tb) -> bool:
        _synchronize()
        t1 = time.perf_counter()
        energy_end = self._gpus.energy_mj()
        rapl_end = self._rapl.read_uj() if self._rapl else None
        cpu_end = self._process.cpu_times()
        r = self.result
        r.wall_s = t1 - self._t0
        if exc_type is not None:
            r.status, r.error = "failed", f"{exc_type.__name__}: {exc}"
        cpu_s = (cpu_end.user - self._cpu_start.user) + (cpu_end.system - self._cpu_start.system)
        r.process_cpu_percent = 100.0 * cpu_s / r.wall_s if r.wall_s > 0 else None
        self._finish_gpu(energy_end)
        self._finish_cpu(rapl_end)
        self._derive()
        return False  # never swallow the exception

    def _finish_gpu(self, energy_end: list[int] | None) -> None:
        r = self.result
        if not self._gpus.available:
            for name in ("gpu_energy_j", "gpu_energy_net_j", "gpu_power_mean_w", "torch_peak_mem_bytes"):
                r.reasons[name] = self._gpus.reason
            return
        self._sampler.stop()
        r.environment["end"] = self._gpus.state()
        r.gpu_energy_j, reason = energy_between(self._energy_start, energy_end)
        r.gpu_energy_source = "NVML total-energy counter" if reason is None else None
        if reason:
            r.reasons["gpu_energy_j"] = reason
        samples = self._sampler.samples
        r.gpu_power_samples, r.gpu_power_source = len(samples), self._gpus.power_source
        r.energy_counter_updates = len(self._sampler.energy_values | {sum(self._energy_start), sum(energy_end)}) - 1
        if samples:
            powers = [w for _, w in samples]
            r.gpu_power_sampled_mean_w, r.gpu_power_peak_w = sum(powers) / len(powers), max(powers)
        if len(samples) >= 2:
            r.gpu_energy_trace_j = sum((t1 - t0) * (w0 + w1) / 2 for (t0, w0), (t1, w1) in zip(samples, samples[1:]))
        if self._keep_trace:
            r.power_trace = samples
        r.gpu_mem_used_peak_bytes = self._sampler.mem_peak_bytes or None
        summarize_states(r, r.environment["start"], r.environment["end"], self._sampler.states)
        _open_windows.remove(self)
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            r.torch_peak_mem_bytes = max(self._mem_peak_bytes, torch.cuda.max_memory_allocated())
        else:
            r.reasons["torch_peak_mem_bytes"] = "CUDA not initialised in this process"
        if r.gpu_energy_j is not None and r.wall_s > 0:
            r.gpu_power_mean_w = r.gpu_energy_j / r.wall_s
        if self._idle is None or self._idle.power_w is None:
            r.reasons["gpu_energy_net_j"] = ("no idle baseline given: pass idle=measure_idle()" if self._idle is None
                                             else self._idle.source)
        else:
            r.idle_power_w, r.idle_power_source = self._idle.power_w, self._idle.source
            if r.gpu_energy_j is not None:
                r.gpu_energy_net_j = r.gpu_energy_j - r.idle_power_w * r.wall_s
        if r.wall_s < SHORT_WINDOW_S or (r.energy_counter_updates or 0) < MIN_COUNTER_UPDATES:
            r.warnings.append(
                f"too short for the energy counter: {r.wall_s:.2f} s, {r.energy_counter_updates} counter updates "
                f"(want >= {SHORT_WINDOW_S:.0f} s and >= {MIN_COUNTER_UPDATES} updates; better 5 s of steady work)"
            )

    def _finish_cpu(self, rapl_end: dict[str, int] | None) -> None:
        r = self.result
        estimate = (Unavailable(r.reasons.get("codecarbon", "codecarbon=False")) if self._codecarbon is None
                    else self._codecarbon.stop_task(r.label) if self._shared_codecarbon else self._codecarbon.stop())
        if self._rapl:
            per_domain = self._rapl.joules_between(self._rapl_start, rapl_end)
            r.cpu_energy_j = sum(j for name, j in per_domain.items() if name.startswith("package"))
            dram = [j for name, j in per_domain.items() if name.startswith("dram")]
            r.ram_energy_j = sum(dram) if dram else None
            r.cpu_energy_source = "measured: RAPL"
            if not dram:
                r.reasons["ram_energy_j"] = "RAPL exposes no dram domain here"
        elif estimate:
            r.cpu_energy_j, r.ram_energy_j = estimate.cpu_energy_j, estimate.ram_energy_j
            r.cpu_energy_source = f"{estimate.method} (RAPL: {self._rapl.reason})"
        else:
            r.reasons["cpu_energy_j"] = f"RAPL: {self._rapl.reason}; CodeCarbon: {estimate.reason}"
        if estimate and estimate.kg_co2_per_kwh is not None:
            known = [e for e in (r.gpu_energy_j, r.cpu_energy_j, r.ram_energy_j) if e is not None]
            r.co2_kg = sum(known) / JOULES_PER_KWH * estimate.kg_co2_per_kwh
            r.co2_source = (f"estimated: CodeCarbon offline grid intensity {estimate.kg_co2_per_kwh:.3f} kg/kWh "
                            f"({self._codecarbon.country_iso_code}) x (GPU + CPU + RAM energy)")
            r.environment["cpu_model"] = estimate.cpu_model
        else:
            r.reasons["co2_kg"] = estimate.reason if not estimate else "CodeCarbon gave no carbon intensity"

    def _derive(self) -> None:
        derive_rates(self.result)


def summarize_states(r: Measurement, start: dict[str, list], end: dict[str, list],
                     samples: list[dict[str, list]]) -> None:
    """The window's temperatures at both ends (the hottest device), its mean SM clock and the share of state
    samples in which each clock-event reason was in force on any device, in place."""
    hottest = lambda state: max(state["temperature_c"]) if state.get("temperature_c") else None  # noqa: E731
    r.temperature_start_c, r.temperature_end_c = hottest(start), hottest(end)
    clocks = [c for state in samples for c in state.get("sm_clock_mhz", [])]
    r.sm_clock_mean_mhz = sum(clocks) / len(clocks) if clocks else None
    if r.sm_clock_mean_mhz is None:
        r.reasons["sm_clock_mean_mhz"] = "no state sample in the window"
    with_reasons = [state["clock_event_reasons"] for state in samples if "clock_event_reasons" in state]
    r.state_samples = len(samples)
    if not with_reasons:
        r.reasons["clock_event_shares"] = "the GPU backend reports no clock-event reasons"
        return
    seen = sorted({name for devices in with_reasons for names in devices for name in names})
    r.clock_event_shares = {name: sum(any(name in names for names in devices) for devices in with_reasons)
                            / len(with_reasons) for name in seen}


def derive_rates(r: Measurement) -> None:
    """A window's rates (per second, per token, per FLOP) from its totals, in place."""
    per = lambda num, den: None if num is None or not den else num / den  # noqa: E731
    r.tokens_per_s = per(r.tokens, r.wall_s)
    r.gpu_j_per_token, r.gpu_j_per_token_net = per(r.gpu_energy_j, r.tokens), per(r.gpu_energy_net_j, r.tokens)
    r.gpu_j_per_flop, r.gpu_j_per_flop_net = per(r.gpu_energy_j, r.flops), per(r.gpu_energy_net_j, r.flops)
    r.tflops = per(r.flops / 1e12, r.wall_s) if r.flops else None
    if not r.flops:
        r.reasons.setdefault("tflops", "no FLOPs counted in the window (elementwise work, or none given)")


def measure_idle(seconds: float = 5.0, **kwargs: Any) -> IdleBaseline:
    """Idle GPU power with this process's CUDA context alive (measured in the same process: a context adds
    tens of watts). Pass it to later windows (`measure(..., idle=baseline)`) for net energy."""
    if not seconds > 0:
        raise ValueError(f"seconds: must be > 0, got {seconds!r}")
    if kwargs.get("gpus") is None and not torch.cuda.is_available():  # no GPU: no idle GPU power to wait for
        return IdleBaseline(None, "no CUDA device: no GPU idle power to measure", 0.0)
    if torch.cuda.is_available():
        torch.zeros(1, device="cuda")  # make sure the context exists
    with measure("idle", codecarbon=False, **kwargs) as window:
        time.sleep(seconds)
    r = window.result
    if r.gpu_power_mean_w is None:
        baseline = IdleBaseline(None, r.reasons.get("gpu_energy_j", "no GPU energy"), r.wall_s)
    else:
        baseline = IdleBaseline(r.gpu_power_mean_w, f"measure_idle: NVML counter over {r.wall_s:.1f} s idle, CUDA context alive", r.wall_s)
    return baseline
