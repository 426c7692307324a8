"""The networks of the frontier (a preset with its weights) and inference's configured inferer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks.bench.configs import parsed
from scripts.checkpoints import load_network
from scripts.networks import make_network
from scripts.scoring import ANDiInferer


@dataclass
class Network:
    """A network of the comparison: ``name``, its ``preset`` and the weights file (trained at the demo budget)."""

    name: str
    weights: Path
    preset: str
    module: torch.nn.Module = field(init=False, repr=False)

    @classmethod
    def parse(cls, spec: str) -> Network:
        """``name=weights:preset``."""
        name, rest = spec.split("=", 1)
        weights, preset = rest.rsplit(":", 1)
        return cls(name, Path(weights), preset)

    def load(self) -> Network:
        net = make_network(self.preset)
        load_network(net, self.weights)
        self.module = net.eval()
        self.parameters = sum(p.numel() for p in net.parameters())
        return self


def base_inferer(seed: int = 0) -> ANDiInferer:
    """Inference's configured inferer (brain slices; bf16 ``amp: auto``, pairs per call of a CPU) at noise ``seed``."""
    return parsed("inferer", ["inference.yaml"], voxel_set="brain", seed=seed)
