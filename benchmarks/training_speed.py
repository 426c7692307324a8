"""Training throughput: slices per second of one optimisation step, per network preset, fp32 and bf16 autocast.

    python -m benchmarks.training_speed [--presets cpu,paper] [--batch_size 16] [--steps 5] [--device cpu]

Each step is what ``train.yaml`` runs: pyramidal noise from ``NoisePrepareBatch``, the network under
``AutocastDiffusionInferer`` (bf16 autocast on or off; channels-last where the config turns it on, i.e. on CUDA;
fused attention as the config's default, and once without it for comparison),
the epsilon MSE, backward and an AdamW step. Inputs are random 128x128 4-channel slices (throughput does not
depend on the content). The first two steps are warm-up; the median of the timed steps is reported.
"""

from __future__ import annotations

import statistics
import time

import torch

from benchmarks.bench.main import benchmark_parser, run_benchmark
from scripts.diffusion import make_scheduler
from scripts.networks import make_network
from scripts.training import AutocastDiffusionInferer, NoisePrepareBatch


def step_seconds(
    preset: str, autocast: bool, batch_size: int, steps: int, device: torch.device, fused_attention: bool = True
) -> float:
    """Median seconds of one training step (after two warm-up steps)."""
    torch.manual_seed(0)
    net = make_network(preset, fused_attention=fused_attention).to(device)
    channels_last = device.type == "cuda"
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    prepare = NoisePrepareBatch(1000, "pyramid", channels_last=channels_last)
    inferer = AutocastDiffusionInferer(make_scheduler(), autocast=autocast)
    batch = {"image": torch.rand(batch_size, 4, 128, 128)}
    times = []
    for i in range(steps + 2):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        images, target, _, kwargs = prepare(batch, device)
        loss = torch.nn.functional.mse_loss(inferer(images, net, **kwargs), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = benchmark_parser(__doc__)
    p.add_argument("--presets", default="cpu,paper")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    print(
        f"# training throughput, batch {args.batch_size} slices of 4x128x128, device {device}, "
        f"torch threads {torch.get_num_threads()}, median of {args.steps} steps"
    )
    print(
        "| preset | parameters | fp32 slices/s | bf16 autocast slices/s | bf16 / fp32 "
        "| bf16, explicit attention slices/s | fused / explicit |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for preset in args.presets.split(","):
        params = sum(p.numel() for p in make_network(preset).parameters())
        fp32 = args.batch_size / step_seconds(preset, False, args.batch_size, args.steps, device)
        bf16 = args.batch_size / step_seconds(preset, True, args.batch_size, args.steps, device)
        explicit = args.batch_size / step_seconds(preset, True, args.batch_size, args.steps, device, False)
        print(
            f"| {preset} | {params / 1e6:.2f}M | {fp32:.1f} | {bf16:.1f} | {bf16 / fp32:.2f} "
            f"| {explicit:.1f} | {bf16 / explicit:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    run_benchmark(main)
