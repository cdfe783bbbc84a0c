"""attnlib.measure on the CPU: the real CPU path end to end, and the GPU arithmetic on recorded counters."""

from __future__ import annotations

import math
import time

import pytest

from attnlib.measurement import (Candidate, GPUBackend, IdleBaseline, NullGPUs, SteadyStateConfig, energy_between, measure,
                                 measure_idle, paired_ratio, reach_steady_state, round_orders, run_trials, summarize)
from attnlib.measurement.nvml import clock_event_names, open_nvml
from attnlib.measurement.rapl import open_rapl


class RecordedGPU(GPUBackend):
    """A GPU backend replaying a steady load: a counter of `power_w` that updates every `update_s`, like NVML's."""

    count = 1
    power_source = "recorded"

    def __init__(self, power_w: float = 300.0, update_s: float = 0.1, energy_mj: list[int] | None = None):
        self.power_w_value, self.update_s, self.t0 = power_w, update_s, time.perf_counter()
        self.replay = list(energy_mj) if energy_mj else None

    def energy_mj(self) -> list[int]:
        if self.replay:  # a fixed sequence of counter reads (the last one repeats)
            return [self.replay.pop(0) if len(self.replay) > 1 else self.replay[0]]
        elapsed = math.floor((time.perf_counter() - self.t0) / self.update_s) * self.update_s
        return [int(1e6 + self.power_w_value * elapsed * 1000)]

    def sample(self) -> tuple[float, int]:
        return self.power_w_value, self.energy_mj()[0]

    def memory_used_bytes(self) -> int:
        return 2**30

    def state(self) -> dict:
        return {"sm_clock_mhz": [1980], "mem_clock_mhz": [2619], "temperature_c": [40]}

    def environment(self) -> dict:
        return {"gpu_names": ["recorded"], "driver": "-", "power_limit_w": [700.0]}


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def timed(work, seconds: float) -> float:
    """`work(seconds)`, and how long it really took (a loaded machine overshoots)."""
    start = time.perf_counter()
    work(seconds)
    return time.perf_counter() - start


def test_cpu_path_end_to_end() -> None:
    """No GPU here: GPU figures None with a reason; CPU/RAM energy from RAPL or CodeCarbon's estimate, labelled."""
    with measure("cpu work", tokens=1000) as window:
        work_s = timed(busy, 1.2)
    r = window.result
    assert r.status == "ok" and work_s <= r.wall_s < work_s + 0.02
    assert r.gpu_energy_j is None and "gpu_energy_j" in r.reasons and r.gpu_j_per_token is None
    assert r.tokens_per_s == pytest.approx(1000 / r.wall_s)
    assert 50 < r.process_cpu_percent < 150
    assert r.cpu_energy_j > 0 and r.ram_energy_j > 0
    assert r.cpu_energy_source.startswith(("measured: RAPL", "estimated"))
    assert r.co2_kg > 0 and r.co2_source.startswith("estimated")
    assert r.environment["torch"] and "hostname" not in str(r.to_dict()).lower()


@pytest.mark.parametrize("work", [time.sleep, busy], ids=["sleep", "busy loop"])
def test_wall_time_of_known_work(work) -> None:
    with measure("timed", codecarbon=False) as window:
        work_s = timed(work, 0.5)
    assert 0.5 <= work_s <= window.result.wall_s < work_s + 0.02  # the work's time, a busy runner's stalls included


def test_work_counted_inside_a_time_bounded_window() -> None:
    with measure("by time", codecarbon=False) as window:
        for _ in range(3):
            busy(0.05)
            window.add_work(tokens=100, flops=1e6)
    r = window.result
    assert (r.tokens, r.flops) == (300, 3e6) and r.tokens_per_s == pytest.approx(300 / r.wall_s)


def test_derived_figures_on_recorded_counter() -> None:
    gpu = RecordedGPU(power_w=300.0)
    idle = IdleBaseline(100.0, "recorded idle", 1.0)
    with measure("steady", tokens=10_000, flops=5e14, idle=idle, codecarbon=False, gpus=gpu, keep_trace=True) as window:
        time.sleep(1.5)
    r = window.result
    assert r.gpu_energy_j == pytest.approx(300.0 * r.wall_s, abs=300 * 0.1 + 1)  # within one counter update
    assert r.gpu_energy_net_j == pytest.approx(r.gpu_energy_j - 100.0 * r.wall_s)
    assert r.gpu_j_per_token == pytest.approx(r.gpu_energy_j / 10_000)
    assert r.gpu_j_per_token_net == pytest.approx(r.gpu_energy_net_j / 10_000)
    assert r.gpu_j_per_flop == pytest.approx(r.gpu_energy_j / 5e14)
    assert r.tflops == pytest.approx(500 / r.wall_s)
    assert r.gpu_power_mean_w == pytest.approx(r.gpu_energy_j / r.wall_s)
    assert r.gpu_power_peak_w == 300.0 and r.gpu_power_samples >= 10 and len(r.power_trace) == r.gpu_power_samples
    assert r.energy_counter_updates >= 10 and not r.warnings
    assert r.idle_power_w == 100.0 and r.idle_power_source == "recorded idle"
    assert r.environment["start"]["sm_clock_mhz"] == [1980] and r.environment["end"]["temperature_c"] == [40]


class ThrottledGPU(RecordedGPU):
    """A card at its power cap: every state read reports the SW power cap, every other one a thermal slowdown too,
    and its SM clock and temperature rise with each read."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.reads = 0

    def state(self) -> dict:
        self.reads += 1
        reasons = ["sw_power_cap"] + (["sw_thermal_slowdown"] if self.reads % 2 == 0 else [])
        return {"sm_clock_mhz": [1700 + self.reads], "mem_clock_mhz": [2619], "temperature_c": [50 + self.reads],
                "clock_event_reasons": [reasons]}


def test_window_records_the_cards_state() -> None:
    """Temperature at both ends, mean SM clock and how often each clock-event reason held, per window."""
    gpu = ThrottledGPU(power_w=690.0, update_s=0.01)
    with measure("capped", codecarbon=False, gpus=gpu) as window:
        time.sleep(1.2)
    r = window.result
    assert r.temperature_start_c == 51 and r.temperature_end_c == 50 + gpu.reads
    assert r.state_samples >= 2 and 1700 < r.sm_clock_mean_mhz < 1700 + gpu.reads
    assert r.clock_event_shares["sw_power_cap"] == 1.0 and 0.3 <= r.clock_event_shares["sw_thermal_slowdown"] <= 0.7
    with measure("no reasons", codecarbon=False, gpus=RecordedGPU()) as window:
        time.sleep(0.6)
    assert window.result.clock_event_shares == {} and "clock_event_shares" in window.result.reasons
    assert window.result.sm_clock_mean_mhz == 1980
    assert clock_event_names(0x4 | 0x20) == ["sw_power_cap", "sw_thermal_slowdown"] and clock_event_names(0x1000) == ["0x1000"]


class WarmingGPU(RecordedGPU):
    """A card whose power settles from `power_w` + `excess_w` to `power_w` with time constant `tau_s` (`drift_w_per_s`
    adds a rise that never settles); the counter integrates it exactly, updated every 10 microseconds."""

    def __init__(self, power_w: float, excess_w: float, tau_s: float, drift_w_per_s: float = 0.0):
        super().__init__(power_w=power_w, update_s=1e-5)
        self.excess_w, self.tau_s, self.drift = excess_w, tau_s, drift_w_per_s

    def energy_mj(self) -> list[int]:
        t = round((time.perf_counter() - self.t0) / self.update_s) * self.update_s
        joules = (self.power_w_value * t + self.excess_w * self.tau_s * (1 - math.exp(-t / self.tau_s))
                  + self.drift * t * t / 2)
        return [int(1e6 + 1000 * joules)]


def steady_work(seconds: float, window) -> None:
    """A constant load: a token per microsecond of the window, so a stall of this process (a busy CI runner)
    changes the work done, not the J/token of a card that has settled."""
    busy(seconds)
    window.add_work(tokens=int(1e6 * window.elapsed_s))


def test_steady_state_waits_for_the_card_to_settle() -> None:
    config = SteadyStateConfig(stretch_s=0.15, tolerance=0.005, min_s=0.3, max_s=5.0)
    state = reach_steady_state({"a": steady_work, "b": steady_work}, config, gpus=WarmingGPU(300.0, 150.0, tau_s=0.25))
    # settled before the cap, and not before exp(-t / 0.25) fell to about 1%: at least 0.9 s of the card's time
    assert state.steady_state_converged is True and 0.9 < state.steady_state_s < config.max_s
    a = [s["gpu_j_per_token"] for s in state.steady_state_stretches if s["workload"] == "a"]
    assert [s["workload"] for s in state.steady_state_stretches[:4]] == ["a", "b", "a", "b"] and a[0] > 1.1 * a[-1]
    assert abs(a[-1] / a[-2] - 1) < 0.005


def test_steady_state_stops_at_its_cap_and_says_so() -> None:
    config = SteadyStateConfig(stretch_s=0.1, tolerance=0.005, min_s=0.0, max_s=0.6)
    state = reach_steady_state({"a": steady_work}, config, gpus=WarmingGPU(300.0, 0.0, 1.0, drift_w_per_s=2000.0))
    assert state.steady_state_converged is False and 0.6 <= state.steady_state_s < 1.0 and "still changing" in state.steady_state_reason
    cpu = reach_steady_state({"a": steady_work}, config)  # no energy counter here: nothing to judge by, nothing run
    assert cpu.steady_state_converged is None and cpu.steady_state_s == 0 and cpu.steady_state_reason
    with pytest.raises(ValueError, match="steady_state"):
        SteadyStateConfig(tolerance=0)


def test_paired_ratio_is_a_t_interval_of_log_ratios() -> None:
    r = paired_ratio([1.1, 1.2, 1.0, None], [1.0, 1.0, 1.0, 1.0])
    logs = [math.log(1.1), math.log(1.2), 0.0]
    mean = sum(logs) / 3
    half = 4.303 * math.sqrt(sum((x - mean) ** 2 for x in logs) / 2) / math.sqrt(3)
    assert r.n == 3 and r.ratio == pytest.approx(math.exp(mean))
    assert (r.low, r.high) == (pytest.approx(math.exp(mean - half)), pytest.approx(math.exp(mean + half)))
    assert not r.excludes_one() and r.half_width() == pytest.approx(max(r.high - 1, 1 - r.low))
    assert paired_ratio([0.9, 0.91, 0.89], [1.0, 1.0, 1.0]).excludes_one()
    assert paired_ratio([0.9], [1.0]).low is None and paired_ratio([], []).ratio is None
    with pytest.raises(ValueError, match="pairs"):
        paired_ratio([1.0], [1.0, 2.0])


def test_null_backend_stands_in_for_a_missing_gpu() -> None:
    """No GPU (this machine): NVML's stand-in reads nothing and says why; the window records the reason."""
    gpus = open_nvml()
    assert isinstance(gpus, NullGPUs) and not gpus.available and gpus.reason
    assert gpus.energy_mj() == [] and gpus.count == 0
    with measure("null", codecarbon=False, gpus=NullGPUs("no card in this test")) as window:
        time.sleep(0.05)
    assert window.result.reasons["gpu_energy_j"] == "no card in this test" and window.result.gpu_count == 0
    with pytest.raises(ValueError, match="devices"):
        open_nvml("some")


@pytest.mark.parametrize("reads,reason", [([5000, 4000], "went backwards"), ([5000, 5000], "did not advance")])
def test_counter_faults_give_none_with_reason(reads: list[int], reason: str) -> None:
    with measure("fault", codecarbon=False, gpus=RecordedGPU(energy_mj=reads)) as window:
        time.sleep(0.05)
    assert window.result.gpu_energy_j is None and reason in window.result.reasons["gpu_energy_j"]
    assert window.result.gpu_j_per_token is None


def test_energy_between_sums_devices() -> None:
    assert energy_between([1000, 2000], [3000, 2500]) == (2.5, None)


def test_short_window_warns() -> None:
    with measure("short", codecarbon=False, gpus=RecordedGPU()) as window:
        time.sleep(0.3)
    assert any("too short for the energy counter" in w for w in window.result.warnings)


def test_idle_baseline_is_passed_explicitly() -> None:
    with measure("no idle given", codecarbon=False, gpus=RecordedGPU()) as window:
        time.sleep(0.1)
    assert window.result.gpu_energy_net_j is None and "idle=" in window.result.reasons["gpu_energy_net_j"]
    baseline = measure_idle(1.0, gpus=RecordedGPU(power_w=80.0))
    assert baseline.power_w == pytest.approx(80.0, rel=0.12)
    with measure("idle given", codecarbon=False, gpus=RecordedGPU(power_w=300.0), idle=baseline) as window:
        time.sleep(1.0)
    r = window.result
    assert r.idle_power_w == baseline.power_w and r.gpu_energy_net_j == pytest.approx(r.gpu_energy_j - baseline.power_w * r.wall_s)


def test_nested_windows() -> None:
    with measure("outer", codecarbon=False) as outer:
        busy(0.2)
        with measure("inner", codecarbon=False) as inner:
            busy(0.3)
    # the inner window holds its own block (plus its end's reads, slower on a loaded machine), the outer both
    assert 0.3 <= inner.result.wall_s < 0.6
    assert outer.result.wall_s > inner.result.wall_s + 0.19


def test_exception_marks_failed_and_propagates() -> None:
    window = measure("explodes", tokens=10, codecarbon=False)
    with pytest.raises(RuntimeError, match="boom"):
        with window:
            busy(0.1)
            raise RuntimeError("boom")
    r = window.result
    assert r.status == "failed" and "boom" in r.error and r.wall_s == pytest.approx(0.1, rel=0.2)


@pytest.mark.parametrize("kwargs", [dict(label=""), dict(label="x", tokens=-1), dict(label="x", sample_hz=0),
                                    dict(label="x", flops="many")])
def test_invalid_arguments(kwargs) -> None:
    with pytest.raises(ValueError):
        measure(**kwargs)


def test_summary_maths() -> None:
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert s.n == 4 and s.mean == 2.5
    assert s.std == pytest.approx(1.2909944)
    assert s.ci95 == pytest.approx(3.182 * 1.2909944 / 2)
    assert s.cv == pytest.approx(1.2909944 / 2.5)
    assert summarize([None, 2.0]).ci95 is None and summarize([]).mean is None


def test_round_orders_are_random_per_round_and_reproducible() -> None:
    orders = round_orders(["A", "B", "C", "D"], 6, seed=7)
    assert all(sorted(o) == ["A", "B", "C", "D"] for o in orders)
    assert len({tuple(o) for o in orders}) > 1  # drawn afresh each round
    assert orders == round_orders(["A", "B", "C", "D"], 6, seed=7) != round_orders(["A", "B", "C", "D"], 6, seed=8)


def test_trials_follow_the_seeded_orders_and_record_failures() -> None:
    order: list[str] = []

    def worker(name: str):
        def run(window) -> None:
            order.append(name)
            if name == "C":
                raise RuntimeError("out of memory")
            window.add_work(tokens=10)
        return run

    candidates = [Candidate(name, worker(name)) for name in "ABC"]
    result = run_trials(candidates, warmup=1, trials=3, seed=5, codecarbon=False, progress=False)
    assert order[:3] == ["A", "B", "C"]  # warm-up
    assert order[3:] == [name for o in round_orders("ABC", 3, 5) for name in o] and result.orders == round_orders("ABC", 3, 5)
    assert [m.status for m in result.trials["C"]] == ["failed"] * 3
    summary = result.summary("A")
    assert summary["wall_s"].n == 3 and summary["tokens_per_s"].mean > 0
    assert result.summary("C")["wall_s"].n == 0
    assert set(result.to_dict()["candidates"]) == {"A", "B", "C"} and result.to_dict()["seed"] == 5


def test_rapl_counters_with_wraparound(tmp_path) -> None:
    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "name").write_text("package-0\n")
    (zone / "energy_uj").write_text("999000000")
    (zone / "max_energy_range_uj").write_text("1000000000")
    rapl = open_rapl(tmp_path)
    start = rapl.read_uj()
    (zone / "energy_uj").write_text("1000000")  # wrapped
    assert rapl.joules_between(start, rapl.read_uj()) == {"package-0@intel-rapl:0": pytest.approx(2.0)}
    assert not open_rapl(tmp_path / "missing") and "no readable RAPL" in open_rapl(tmp_path / "missing").reason


def test_codecarbon_failure_is_a_reason_not_a_zero(monkeypatch) -> None:
    from attnlib.measurement.base import Unavailable
    from attnlib.measurement.codecarbon_estimate import CodeCarbonTracker

    monkeypatch.setattr(CodeCarbonTracker, "start", lambda self: Unavailable("CodeCarbon could not start: test"))
    with measure("no codecarbon") as window:
        time.sleep(0.05)
    r = window.result
    assert r.reasons["codecarbon"] == "CodeCarbon could not start: test" and r.co2_kg is None
    assert r.cpu_energy_j is None or r.cpu_energy_source.startswith("measured: RAPL")
    assert "test" in r.reasons.get("cpu_energy_j", "test") and "test" in r.reasons["co2_kg"]


def test_top_level_api() -> None:
    """The names the issues and the README promise, at the top of the package."""
    import attnlib

    for name in attnlib.__all__:
        assert hasattr(attnlib, name), name
    with attnlib.measure("top level", codecarbon=False) as window:
        time.sleep(0.01)
    assert isinstance(window.result, attnlib.Measurement) and window.result.wall_s > 0


def test_one_codecarbon_tracker_shared_by_many_windows() -> None:
    """A job starts CodeCarbon once; each window is one of its tasks, with no start-up of its own."""
    from attnlib.measurement.codecarbon_estimate import CodeCarbonTracker

    tracker = CodeCarbonTracker("USA")
    if tracker.start() is not None:
        pytest.skip("CodeCarbon cannot start here")
    starts = []
    for i in range(2):
        start = time.perf_counter()
        with measure(f"task {i}", codecarbon=tracker) as window:
            busy(0.3)
        starts.append(time.perf_counter() - start - window.result.wall_s)
        assert window.result.cpu_energy_j > 0 and window.result.cpu_energy_source.startswith(("measured", "estimated"))
        assert window.result.co2_kg > 0
    assert max(starts) < 0.5 and tracker.running  # no per-window start-up; the job's tracker keeps running
    assert tracker.stop().cpu_energy_j > 0 and not tracker.running


def test_calibrations_on_the_cpu_measure_rates_and_no_energy(tmp_path) -> None:
    """The GEMM and read-bandwidth floors run end to end on a CPU (float32): rates, and energy None (no GPU
    counter), written to one file per card with the bandwidth under its own key."""
    import json

    from attnlib.measurement import calibrate_bandwidth, calibrate_peak
    from attnlib.measurement.calibrate import main

    peak = calibrate_peak(size=64, seconds=0.05)
    bandwidth = calibrate_bandwidth(nbytes=2**20, seconds=0.05)
    assert peak.tflops > 0 and peak.j_per_flop is None and peak.dtype == "float32"
    assert bandwidth.gb_per_s > 0 and bandwidth.j_per_byte is None and bandwidth.nbytes == 2**20
    with pytest.raises(ValueError, match="nbytes"):
        calibrate_bandwidth(nbytes=10)
    main(["--out-dir", str(tmp_path), "--seconds", "0.05", "--size", "64", "--nbytes", str(2**20)])
    written = written_first = json.loads((tmp_path / "cpu.json").read_text())
    assert written["tflops"] > 0 and written["bandwidth"]["gb_per_s"] > 0
    main(["--out-dir", str(tmp_path / "bad"), "--seconds", "0.05", "--size", "64", "--nbytes", "10"])
    written = json.loads((tmp_path / "bad" / "cpu.json").read_text())  # the GEMM floor kept, the failure said
    assert written["tflops"] > 0 and "nbytes" in written["bandwidth"]["error"]
    # a card another folder calibrated is copied, naming its source, not measured again (its figures unchanged)
    main(["--out-dir", str(tmp_path / "copy"), "--size", "10", "--reuse", str(tmp_path / "none"), str(tmp_path)])
    copied = json.loads((tmp_path / "copy" / "cpu.json").read_text())
    assert copied.pop("reused_from") == str(tmp_path / "cpu.json") and copied == written_first


def test_a_codecarbon_task_without_energy_is_no_estimate_not_a_zero() -> None:
    """CodeCarbon reports a zero delta for a task shorter than its sampling or one it lost: that is no figure."""
    from types import SimpleNamespace

    from attnlib.measurement.base import Unavailable
    from attnlib.measurement.codecarbon_estimate import CodeCarbonTracker

    tracker = CodeCarbonTracker("USA")
    tracker._tracker = SimpleNamespace(stop_task=lambda name: SimpleNamespace(energy_consumed=0.0))
    estimate = tracker.stop_task("short")
    assert isinstance(estimate, Unavailable) and "no estimate rather than a zero" in estimate.reason
