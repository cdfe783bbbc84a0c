"""What this GPU really delivers, measured like everything else (one synchronised window, after a warm-up):

- `calibrate_peak`: a large bf16 matrix product. Its TFLOP/s is the practical ceiling for MFU and its J/FLOP the
  practical floor for energy per FLOP, so a training run's J/FLOP can be quoted as "x times the floor".
- `calibrate_bandwidth`: reading a large buffer (a sum over it: reads only, as a decode step reads its weights and
  cache). Its GB/s gives a decode step's memory floor, bytes read over bandwidth; its J/byte the energy floor.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass

import torch

from .nvml import gpu_uuid
from .window import Measurement, measure


@dataclass(frozen=True)
class Calibration:
    device: str
    uuid: str | None  # NVML's card name: the report matches each result to its own card's calibration
    size: int
    dtype: str
    tflops: float
    j_per_flop: float | None  # gross, NVML counter
    j_per_flop_net: float | None
    pj_per_flop: float | None
    window: dict

    def to_dict(self) -> dict:
        return asdict(self)


def calibrate_peak(size: int = 8192, seconds: float = 10.0, dtype: torch.dtype = torch.bfloat16) -> Calibration:
    """Time `size`^3 matrix products for about `seconds` in one measurement window (after a warm-up).

    On a machine without CUDA this runs float32 products of at most 2048^2 on the CPU, says so, and the energy
    figures are None.
    """
    if size < 1 or seconds <= 0:
        raise ValueError(f"size and seconds must be positive, got {size}, {seconds}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = dtype if device == "cuda" else torch.float32
    if device == "cpu":
        size = min(size, 2048)
        print(f"calibrate_peak: no CUDA device; timing float32 {size}^2 products on the CPU for about {seconds:g} s "
              "(no energy figures)", file=sys.stderr, flush=True)
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))  # random: zeros run faster
    out = torch.empty(size, size, device=device, dtype=dtype)
    flops_per_product = 2.0 * size**3

    def products(n: int) -> None:
        for _ in range(n):
            torch.matmul(a, b, out=out)

    products(3)
    per_product_s = _timed(products, device)
    n = max(1, int(seconds / per_product_s))
    with measure("calibrate_peak", flops=n * flops_per_product, codecarbon=False) as window:
        products(n)
    r: Measurement = window.result
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    uuid = gpu_uuid() if device == "cuda" else None
    return Calibration(
        device=name, uuid=uuid, size=size, dtype=str(dtype).removeprefix("torch."), tflops=r.tflops, j_per_flop=r.gpu_j_per_flop,
        j_per_flop_net=r.gpu_j_per_flop_net, pj_per_flop=None if r.gpu_j_per_flop is None else r.gpu_j_per_flop * 1e12,
        window=r.to_dict(),
    )


@dataclass(frozen=True)
class BandwidthCalibration:
    device: str
    uuid: str | None
    nbytes: int  # the buffer read by each pass
    gb_per_s: float  # bytes read per second / 1e9
    j_per_byte: float | None  # gross, NVML counter
    j_per_byte_net: float | None
    window: dict

    def to_dict(self) -> dict:
        return asdict(self)


def calibrate_bandwidth(nbytes: int = 2**32, seconds: float = 5.0) -> BandwidthCalibration:
    """Sum a buffer of `nbytes` (bf16 on CUDA, float32 on the CPU) repeatedly for about `seconds` in one window:
    the bytes read per second and per joule of the card's memory system at its best."""
    if nbytes < 1024 or seconds <= 0:
        raise ValueError(f"nbytes >= 1024 and seconds > 0 required, got {nbytes}, {seconds}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    # random values: constant ones would toggle fewer bits, and draw less power, than real weights do
    buffer = torch.randn(nbytes // torch.tensor([], dtype=dtype).element_size(), device=device, dtype=dtype)

    def passes(n: int) -> None:
        for _ in range(n):
            buffer.sum(dtype=torch.float32)  # one scalar written per pass: reads only

    passes(3)
    per_pass_s = _timed(passes, device)
    n = max(1, int(seconds / per_pass_s))
    with measure("calibrate_bandwidth", codecarbon=False) as window:
        passes(n)
    r: Measurement = window.result
    read = n * buffer.nbytes
    per_byte = lambda joules: None if joules is None else joules / read  # noqa: E731
    return BandwidthCalibration(
        device=torch.cuda.get_device_name() if device == "cuda" else "cpu",
        uuid=gpu_uuid() if device == "cuda" else None, nbytes=buffer.nbytes, gb_per_s=read / r.wall_s / 1e9,
        j_per_byte=per_byte(r.gpu_energy_j), j_per_byte_net=per_byte(r.gpu_energy_net_j), window=r.to_dict(),
    )


def _timed(passes, device: str) -> float:
    """Seconds of one call of `passes(1)`, synchronised, from three."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    passes(3)
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / 3


def main(argv: list[str] | None = None) -> None:
    """`python -m attnlib.measurement.calibrate --out-dir results/paper/calibration`: writes `<card uuid>.json`
    (the GEMM figures, and the read bandwidth under `bandwidth`) for the first visible GPU unless that card is
    already calibrated. The pipeline runs it in its own process
    before the trials, once per GPU it uses. `--reuse DIR...`: calibration folders of other results folders; a
    card one of them has calibrated is copied from there (with `reused_from`), not measured again: the figures are
    the card's, and a call that measures several folders on one card spends its seconds once."""
    import argparse
    import json
    from pathlib import Path

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size", type=int, default=8192, help="GEMM size (square)")
    parser.add_argument("--nbytes", type=int, default=2**32, help="buffer read by the bandwidth calibration")
    parser.add_argument("--reuse", type=Path, nargs="*", default=[], help="other calibration folders to copy from")
    args = parser.parse_args(argv)
    uuid = gpu_uuid() if torch.cuda.is_available() else "cpu"
    out = args.out_dir / f"{uuid}.json"
    if out.exists():
        print(f"calibrate_peak: {uuid} already calibrated ({out})")
        return
    for source in (folder / f"{uuid}.json" for folder in args.reuse):
        if source.exists():
            args.out_dir.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({**json.loads(source.read_text()), "reused_from": str(source)}, indent=1))
            print(f"calibrate_peak: {uuid} calibrated in {source}; copied")
            return
    calibration = calibrate_peak(size=args.size, seconds=args.seconds)
    try:
        bandwidth = calibrate_bandwidth(nbytes=args.nbytes, seconds=args.seconds / 2).to_dict()
        read = f"{bandwidth['gb_per_s']:.0f} GB/s read"
    except Exception as error:  # the GEMM floor stands on its own; the bandwidth's failure is recorded with it
        bandwidth = {"error": f"{type(error).__name__}: {str(error)[:500]}"}
        read = f"bandwidth failed ({bandwidth['error']})"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**calibration.to_dict(), "bandwidth": bandwidth}, indent=1, default=str))
    print(f"calibrate_peak: {calibration.tflops:.0f} TFLOP/s, {calibration.pj_per_flop} pJ/FLOP, {read} on "
          f"{calibration.device} {uuid}")


if __name__ == "__main__":
    main()
