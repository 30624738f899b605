"""Measure every network in `meddenoise.models.MODELS` at its default arguments on this CPU.

For each model: parameter count; multiply-accumulates per pixel (``FlopCounterMode`` on one
1 x 1 x 256 x 256 forward, MACs = FLOPs / 2, counting convolutions and matrix products); and the
median wall time of one forward pass on a 1 x 1 x 512 x 512 input, under ``torch.inference_mode``
in eval mode, after warm-up, with ``torch.set_num_threads(THREADS)``, in three settings:
fp32, fp32 + channels_last, and bf16 autocast + channels_last.  Conditioned models get a constant
noise map of 25/255.  Weights are random: speed does not depend on them.

Usage:
    python tools/benchmark_models.py                      # print the table
    python tools/benchmark_models.py --write docs/models.md   # also write it into the page
    python tools/benchmark_models.py --models dncnn cond_unet --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import re
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from meddenoise.models import MODELS

THREADS = 2
FLOP_SIZE = 256
TIME_SIZE = 512
TABLE_START = "<!-- benchmark table start -->"
TABLE_END = "<!-- benchmark table end -->"


def model_inputs(model: nn.Module, size: int) -> tuple[torch.Tensor, ...]:
    """A fixed 1 x 1 x size x size input, plus a noise map for a conditioned model."""
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 1, size, size, generator=generator)
    if getattr(model, "conditioned", False):
        return image, torch.full((1, 1, 1, 1), 25 / 255)
    return (image,)


def macs_per_pixel(model: nn.Module) -> float:
    inputs = model_inputs(model, FLOP_SIZE)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(*inputs)
    return counter.get_total_flops() / 2 / FLOP_SIZE**2


def median_ms(run: Callable[[], object], *, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


@contextlib.contextmanager
def bf16_autocast(enabled: bool) -> Iterator[None]:
    if enabled:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    else:
        yield


def forward_once(model: nn.Module, inputs: tuple[torch.Tensor, ...], *, bf16: bool) -> object:
    with torch.inference_mode(), bf16_autocast(bf16):
        return model(*inputs)


def time_model(model: nn.Module, *, warmup: int, repeats: int) -> dict[str, float]:
    results = {}
    settings = {
        "fp32": (torch.contiguous_format, False),
        "fp32 channels_last": (torch.channels_last, False),
        "bf16 channels_last": (torch.channels_last, True),
    }
    for label, (memory_format, bf16) in settings.items():
        model = model.to(memory_format=memory_format)  # type: ignore[call-overload]
        inputs = tuple(
            tensor.contiguous(memory_format=memory_format)
            for tensor in model_inputs(model, TIME_SIZE)
        )

        run = functools.partial(forward_once, model, inputs, bf16=bf16)
        results[label] = median_ms(run, warmup=warmup, repeats=repeats)
    return results


def cpu_name() -> str:
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown CPU"
    match = re.search(r"^Model name:\s*(.+)$", output, flags=re.MULTILINE)
    return match.group(1).strip() if match else "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--write", type=Path, help="replace the table between the markers in this Markdown file"
    )
    args = parser.parse_args()

    torch.set_num_threads(THREADS)
    lines = [
        "| model | params | MACs / pixel | fp32 ms | fp32 channels_last ms | "
        "bf16 channels_last ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in args.models:
        torch.manual_seed(0)
        model = MODELS[name]().eval()
        params = sum(parameter.numel() for parameter in model.parameters())
        macs = macs_per_pixel(model)
        times = time_model(model, warmup=args.warmup, repeats=args.repeats)
        line = (
            f"| `{name}` | {params / 1e6:.2f}M | {macs / 1e3:.0f}k | "
            f"{times['fp32']:.0f} | {times['fp32 channels_last']:.0f} | "
            f"{times['bf16 channels_last']:.0f} |"
        )
        lines.append(line)
        print(line, flush=True)

    table = "\n".join(lines)
    print()
    print(f"CPU: {cpu_name()}, {THREADS} threads, torch {torch.__version__}")
    print(table)
    if args.write is not None:
        page = args.write.read_text()
        start, end = page.index(TABLE_START) + len(TABLE_START), page.index(TABLE_END)
        args.write.write_text(page[:start] + "\n" + table + "\n" + page[end:])


if __name__ == "__main__":
    main()
