"""The seconds of the frontier: how a network call is made (pairs per call, precision, ``torch.compile``) and the
median seconds per slice-timestep pair of each way, timed apart from the cache."""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.bench.frontier import log
from benchmarks.bench.frontier.networks import Network
from benchmarks.bench.frontier.studies import Study
from scripts.files import atomic_write_bytes
from scripts.scoring import ANDiInferer


@dataclass
class SpeedOption:
    """How a network call is made: pairs per call, precision ("bf16", "fp32", "int8") and ``torch.compile``."""

    pairs_per_call: int
    precision: str = "bf16"
    compile: bool = False

    @property
    def key(self) -> str:
        return f"{self.precision}_b{self.pairs_per_call}" + ("_compiled" if self.compile else "")

    @property
    def label(self) -> str:
        return f"{self.precision}, {self.pairs_per_call}/call" + (", compiled" if self.compile else "")

    def inferer(self, base: ANDiInferer) -> ANDiInferer:
        return ANDiInferer(
            base.scheduler,
            batch_size=self.pairs_per_call,
            amp=self.precision == "bf16",
            compile=self.compile,
            diffusion_range=base.diffusion_range,
            seed=base.seed,
            log_floor=base.log_floor,
        )

    def network(self, network: Network) -> torch.nn.Module:
        if self.precision != "int8":
            return network.module
        with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(network.module, {torch.nn.Linear}, dtype=torch.qint8)


def time_option(option: SpeedOption, network: Network, study: Study, base: ANDiInferer, args) -> dict:
    """Median seconds per slice-timestep pair of ``option`` (and the first call's seconds, compilation included)."""
    x_0 = study.slices()
    inferer = option.inferer(base).at_timesteps(base.timesteps[: args.probe_timesteps])
    module = option.network(network)
    pairs = x_0.shape[0] * args.probe_timesteps
    times = []
    for _ in range(args.repeats + 1):  # the first call warms up (and compiles)
        start = time.perf_counter()
        with torch.inference_mode():
            inferer.score_slices(x_0, module)
        times.append(time.perf_counter() - start)
    return {
        "per_pair_s": statistics.median(times[1:]) / pairs,
        "first_call_s": times[0],
        "pairs": pairs,
        "threads": torch.get_num_threads(),
    }


def speed_options(args: argparse.Namespace, networks: list[Network], base: ANDiInferer) -> dict[str, list[SpeedOption]]:
    """The ways timed, per network: on the first, ``--pairs_per_call`` (bf16), fp32, int8 and (unless
    ``--no_compile``) ``torch.compile`` at the configured pairs per call; on the others the default call only."""
    first = networks[0]
    options = {first.name: [SpeedOption(int(b)) for b in args.pairs_per_call.split(",")]}
    options[first.name] += [SpeedOption(base.batch_size, "fp32"), SpeedOption(base.batch_size, "int8")]
    if not args.no_compile:
        options[first.name].append(SpeedOption(base.batch_size, compile=True))
    for network in networks[1:]:
        options[network.name] = [SpeedOption(base.batch_size)]
    return options


def timings(
    args: argparse.Namespace,
    work: Path,
    networks: list[Network],
    options: dict[str, list[SpeedOption]],
    study: Study,
    base: ANDiInferer,
) -> dict[str, dict]:
    """Seconds per pair of every option (``"network|option"`` -> :func:`time_option`'s figures), kept in
    ``work/timing.json``: those already there are not timed again."""
    timing_path = work / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.is_file() else {}
    for network in networks:
        for option in options[network.name]:
            key = f"{network.name}|{option.key}"
            if key not in timing:
                timing[key] = time_option(option, network, study, base, args)
                atomic_write_bytes(json.dumps(timing, indent=1).encode(), timing_path)
            log(f"timing {key}: {1000 * timing[key]['per_pair_s']:.2f} ms per pair")
    return timing
