"""Scoring speed and memory: the bundle's fast path against the authors' procedure, on one made study.

    python -m benchmarks.scoring_speed [--weights bundle/models/model.pt] [--t_stride 10] [--strides 1,2,5,10]
                                 [--batch_sizes 4,8,16,64]

Both paths use the same weights, the same preprocessed study and the same noise (``ANDiInferer.noise_for``):

* reference (``bundle/scripts/reference.py``): one timestep after another, batched over all slices, float32, every d_t
  stacked, then the geometric mean; the UNet's attention as an explicit softmax(QK^T)V, as the authors ran it;
* fast (``scripts.scoring.ANDiInferer`` with the inference config's defaults, ``batch_size`` included):
  brain slices x timesteps in chunks, running log-sum, inference mode, channels-last, fused attention, bf16
  autocast where it is the default ("auto").

It then prints how far d_t from the two means (Eq. 6 as written, the authors' form) lands from the form the bundle
uses, a sweep of the fast path's pairs per call (seconds and peak memory), and the quality-against-stride table.

Each measurement runs in its own process, so that peak memory is that path's alone: on CPU the peak resident set
size while scoring, less the resident size before (Linux ``/proc/self/status``, peak reset through ``clear_refs``);
on CUDA ``torch.cuda.max_memory_allocated``. The study is MADE (synthetic) data, a tumour-like lesion on the MNI152
anatomy (``scripts.synthetic``), and so is every AUPRC printed here. The last line reads
``speedup=<x> peak_mem_ratio=<y> max_abs_diff_fp32=<z> auprc_delta_bf16=<w>`` (z relative to the map's range).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks import REPO
from benchmarks.bench.main import benchmark_parser, run_benchmark
from scripts.checkpoints import load_network
from scripts.diffusion import make_scheduler
from scripts.metrics import Subject, evaluate_subjects
from scripts.networks import make_network
from scripts.reference import reference_slices, reference_volume
from scripts.scoring import ANDiInferer, brain_slices


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def make_study(folder: Path, seed: int) -> Path:
    """Preprocess one made tumour study as inference does; save image (C, H, W, D), label and brain to npz."""
    from benchmarks.bench.configs import parsed
    from scripts.synthetic import make_study as synth
    from scripts.synthetic import write_study

    paths = write_study(synth(seed, "tumour"), folder, f"bench_{seed}")
    data = parsed("preprocessing", register=False)(paths)
    out = folder / "study.npz"
    np.savez(out, image=data["image"].numpy(), label=data["label"].numpy()[0] > 0.5)
    return out


def bench_network(args: argparse.Namespace, fused_attention: bool) -> torch.nn.Module:
    """The ``--preset`` network in eval mode, with the ``--weights`` when that file exists (random weights else)."""
    net = make_network(args.preset, fused_attention=fused_attention)
    if Path(args.weights).is_file():
        load_network(net, args.weights)
    return net.eval()


def worker(args: argparse.Namespace) -> None:
    """One measurement in this process: score the study with one path, save the map, print seconds and peak memory."""
    torch.manual_seed(0)
    device = torch.device(args.device)
    with np.load(args.study) as z:
        image = torch.from_numpy(z["image"]).to(device)
    net = bench_network(args, fused_attention=args.worker != "reference").to(device)  # reference: explicit softmax
    amp = {"reference": False, "fast_fp32": False, "fast_bf16": True, "fast": "auto"}[args.worker]
    inferer = ANDiInferer(
        make_scheduler(),
        args.t_lower,
        args.t_upper,
        args.t_stride,
        batch_size=args.batch_size,
        amp=amp,
        compile=args.compile,
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    _reset_peak()
    rss_before = _rss_kb("VmRSS")
    start = time.perf_counter()
    with torch.inference_mode():
        if args.worker == "reference":
            a = reference_volume(inferer, image, net)
        else:
            a = inferer(image, net)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        peak_mb = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak_mb = (_rss_kb("VmHWM") - rss_before) / 1024
    torch.save(a.float().cpu(), args.output)
    print(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "amp": inferer.use_amp(device)}))


def run_worker(
    mode: str, study: Path, out: Path, args: argparse.Namespace, t_stride: int, batch_size: int | None = None
) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.scoring_speed",
        "--worker",
        mode,
        "--study",
        str(study),
        "--output",
        str(out),
        "--weights",
        args.weights,
        "--preset",
        args.preset,
        "--device",
        args.device,
        "--t_stride",
        str(t_stride),
        "--t_lower",
        str(args.t_lower),
        "--t_upper",
        str(args.t_upper),
        "--batch_size",
        str(batch_size or args.batch_size),
    ]
    if args.compile:
        cmd.append("--compile")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def auprc(a: torch.Tensor, study: Path) -> float:
    """AUPRC of the channel-max map over the study's brain voxels (no median filter), pooled as in the paper."""
    with np.load(study) as z:
        label, image = z["label"], z["image"]
    brain = (np.abs(image) > 0).any(axis=0)
    subject = Subject("bench", a.amax(0).numpy(), label, brain)
    return evaluate_subjects([subject], median_filter=0).auprc


def config_batch_size(device: str) -> int:
    """The inference config's ``batch_size`` (pairs per network call) on ``device``."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "bundle" / "configs" / "inference.yaml"))
    parser["device"] = f"$torch.device('{device}')"
    return int(parser.get_parsed_content("batch_size"))


BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}
"""Dense bf16 tensor-core peaks (vendor datasheets, SXM parts), looked up by the CUDA device's name."""


def flops_per_pair(args: argparse.Namespace, shape: tuple[int, ...]) -> float:
    """FLOPs of one network forward pass on one slice (C, H, W), counted by ``torch.utils.flop_counter``."""
    from torch.utils.flop_counter import FlopCounterMode

    net = make_network(args.preset).eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(torch.zeros((2, *shape)), timesteps=torch.zeros(2, dtype=torch.long))
    return counter.get_total_flops() / 2


def peak_tflops(args: argparse.Namespace) -> float | None:
    """The device's bf16 peak: ``--peak_tflops``, else looked up for known CUDA devices; None when unknown."""
    if args.peak_tflops:
        return args.peak_tflops
    if args.device.startswith("cuda"):
        name = torch.cuda.get_device_name(torch.device(args.device))
        return next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)
    return None


def means_form_error(args: argparse.Namespace, study: Path, n_slices: int = 16) -> tuple[float, float]:
    """Largest differences, over the map's range, of two float32 references from a float64 evaluation of d_t (from
    the same network outputs) on ``n_slices`` central brain slices: d_t from the two means (Eq. 6 as written) and
    d_t from the noises (the bundle's form)."""
    from scripts.diffusion import deviation_from_noise, q_sample, schedule_terms

    with np.load(study) as z:
        image = torch.from_numpy(z["image"]).float()
    keep = brain_slices(image)
    mid = keep[max(0, len(keep) // 2 - n_slices // 2) :][:n_slices]
    device = torch.device(args.device)
    x_0 = image[..., mid].permute(3, 0, 1, 2).contiguous().to(device)
    net = bench_network(args, fused_attention=False).to(device)
    inferer = ANDiInferer(make_scheduler(), args.t_lower, args.t_upper, args.t_stride, amp=False)
    n, logs = len(mid), []
    x_d = inferer.diffusion_range.to_diffusion(x_0)  # what the network sees (reference_slices maps x_0 itself)
    with torch.inference_mode():
        means = reference_slices(inferer, x_0, net, form="means").amax(1)
        noise = reference_slices(inferer, x_0, net, form="noise").amax(1)
        for t in inferer.timesteps:  # float64 d_t from the float32 network outputs: no rounding in the formula
            eps = inferer.noise_for(t, x_0.shape, x_0.device)
            t_n = torch.full((n,), t, device=device)
            terms = schedule_terms(inferer.scheduler, t_n)
            eps_hat = net(q_sample(x_d, eps, terms), timesteps=t_n).double()
            terms64 = type(terms)(**{k: v.double() for k, v in vars(terms).items()})
            logs.append(deviation_from_noise(eps.double(), eps_hat, terms64).clamp_min(inferer.log_floor).log())
    exact = torch.stack(logs).mean(0).exp().amax(1)
    span = float(exact.max() - exact.min())
    return float((means - exact).abs().max()) / span, float((noise - exact).abs().max()) / span


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module's docstring); ``--worker`` and its options are the measuring process's."""
    p = benchmark_parser(__doc__)
    p.add_argument("--weights", default=str(REPO / "bundle" / "models" / "model.pt"))
    p.add_argument("--preset", default="cpu")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--t_lower", type=int, default=75)
    p.add_argument("--t_upper", type=int, default=200)
    p.add_argument("--t_stride", type=int, default=10, help="timestep stride of the reference-vs-fast comparison")
    p.add_argument("--strides", default="1,2,5,10", help="strides of the quality table (empty: skip it)")
    p.add_argument("--batch_size", type=int, help="pairs per call of the fast path (default: the inference config's)")
    p.add_argument("--batch_sizes", default="4,8,16,64", help="pairs per call swept on the fast path (empty: skip)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network in the fast path")
    p.add_argument("--peak_tflops", type=float, help="the device's bf16 peak (default: known for H100/H200/A100)")
    p.add_argument("--seed", type=int, default=2000, help="seed of the made study")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--study", help=argparse.SUPPRESS)
    p.add_argument("--output", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def compare_paths(args: argparse.Namespace, study: Path, tmp: Path) -> tuple[dict, dict, dict[str, float]]:
    """The reference and the fast path (fp32, bf16, as configured), each in its own process: their seconds and peak
    memory, how far they land apart; returns (results, maps, figures of the last line)."""
    results, maps = {}, {}
    for mode in ("reference", "fast_fp32", "fast_bf16", "fast"):
        results[mode] = run_worker(mode, study, tmp / f"{mode}.pt", args, args.t_stride)
        maps[mode] = torch.load(tmp / f"{mode}.pt", weights_only=True)
        r = results[mode]
        print(f"{mode:10s} seconds={r['seconds']:8.2f} peak_mem_mb={r['peak_mb']:9.1f} bf16={r['amp']}")
    ref, fp32, bf16 = (maps[k].amax(0) for k in ("reference", "fast_fp32", "fast_bf16"))
    span = float(ref.max() - ref.min())
    diff = float((fp32 - ref).abs().max())
    corr = float(torch.corrcoef(torch.stack([bf16.flatten(), fp32.flatten()]))[0, 1])
    auprc_fp32, auprc_bf16 = auprc(maps["fast_fp32"], study), auprc(maps["fast_bf16"], study)
    speedup = results["reference"]["seconds"] / results["fast"]["seconds"]
    mem_ratio = results["fast"]["peak_mb"] / max(results["reference"]["peak_mb"], 1e-9)
    print(f"fp32 fast vs reference: max |diff| = {diff:.3e} ({diff / span:.2e} of the map's range {span:.3e})")
    print(
        f"bf16 vs fp32 fast path: correlation {corr:.5f}; AUPRC (made data) fp32 {auprc_fp32:.4f}, "
        f"bf16 {auprc_bf16:.4f}"
    )
    return (
        results,
        maps,
        {
            "speedup": speedup,
            "mem_ratio": mem_ratio,
            "diff": diff / span,
            "auprc_delta": auprc_bf16 - auprc_fp32,
        },
    )


def print_flops(args: argparse.Namespace, shape: tuple[int, ...], n_brain: int, n_t: int, fast: dict) -> None:
    """The fast path's seconds and pairs per second, and its TFLOP/s beside the device's bf16 peak."""
    flops = flops_per_pair(args, tuple(shape[:3]))
    study_tflop = flops * n_brain * n_t / 1e12
    achieved = study_tflop / fast["seconds"]
    print(
        f"fast path: {fast['seconds']:.2f} s per study, "
        f"{n_brain * n_t / fast['seconds']:.0f} slice-timestep pairs per second, "
        f"peak memory {fast['peak_mb']:.0f} MB"
    )
    peak = peak_tflops(args)
    print(
        f"network FLOPs (torch.utils.flop_counter): {flops / 1e9:.2f} GFLOP per slice-timestep pair; "
        f"{study_tflop:.1f} TFLOP per study here ({n_brain} brain slices x {n_t} timesteps), "
        f"{flops * n_brain * 125 / 1e12:.1f} TFLOP at the paper's 125; fast path {achieved:.2f} TFLOP/s"
        + (f" = {100 * achieved / peak:.1f}% of the device's bf16 peak {peak:.0f} TFLOP/s" if peak else "")
    )


def print_batch_sweep(args: argparse.Namespace, study: Path, tmp: Path, fast: dict) -> None:
    """Seconds and peak memory of the fast path at each of ``--batch_sizes`` pairs per call."""
    sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    if sizes:
        print("\n| pairs per call (fast path) | seconds | peak memory (MB) |")
        print("| --- | --- | --- |")
        for size in sizes:
            r = fast if size == args.batch_size else None
            r = r or run_worker("fast", study, tmp / f"batch{size}.pt", args, args.t_stride, size)
            print(f"| {size} | {r['seconds']:.2f} | {r['peak_mb']:.1f} |")


def print_stride_table(args: argparse.Namespace, study: Path, tmp: Path, fast: dict, fast_map: torch.Tensor) -> None:
    """Seconds and AUPRC of the fast path at each of ``--strides``."""
    strides = [int(s) for s in args.strides.split(",") if s.strip()]
    if strides:
        print("\n| t stride | timesteps | seconds (fast path) | AUPRC (made data, no median filter) |")
        print("| --- | --- | --- | --- |")
        for stride in strides:
            r, a = fast, fast_map
            if stride != args.t_stride:
                r = run_worker("fast", study, tmp / f"stride{stride}.pt", args, stride)
                a = torch.load(tmp / f"stride{stride}.pt", weights_only=True)
            n = len(range(args.t_lower, args.t_upper, stride))
            print(f"| {stride} | {n} | {r['seconds']:.2f} | {auprc(a, study):.4f} |")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    if args.batch_size is None:
        args.batch_size = config_batch_size(args.device)
    weights = "the shipped demo weights" if Path(args.weights).is_file() else "RANDOM weights (no weights file)"
    print(
        f"# ANDi scoring benchmark on MADE (synthetic) data; {args.preset} preset with {weights}; "
        f"device {args.device}; torch threads {torch.get_num_threads()}; fast path {args.batch_size} pairs per call"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        study = make_study(tmp, args.seed)
        with np.load(study) as z:
            shape, n_brain = z["image"].shape, int((np.abs(z["image"]) > 0).any(axis=(0, 1, 2)).sum())
        n_t = len(range(args.t_lower, args.t_upper, args.t_stride))  # as ANDiInferer: t_upper excluded
        print(
            f"# study {shape} (C, H, W, D), {n_brain} brain slices; t in range({args.t_lower}, {args.t_upper}) "
            f"stride {args.t_stride}: {n_t} timesteps"
        )
        results, maps, last = compare_paths(args, study, tmp)
        print_flops(args, shape, n_brain, n_t, results["fast"])
        means_err, noise_err = means_form_error(args, study)
        print(
            "d_t precision, float32 reference on 16 slices against float64 arithmetic on the same network outputs: "
            f"from the two means (Eq. 6, the authors' form) {means_err:.2e} of the range; "
            f"from the noises (the bundle's form) {noise_err:.2e}"
        )
        print_batch_sweep(args, study, tmp, results["fast"])
        print_stride_table(args, study, tmp, results["fast"], maps["fast"])
        print(
            f"\nspeedup={last['speedup']:.2f} peak_mem_ratio={last['mem_ratio']:.4f} "
            f"max_abs_diff_fp32={last['diff']:.2e} auprc_delta_bf16={last['auprc_delta']:+.4f}"
        )


if __name__ == "__main__":
    run_benchmark(main)
