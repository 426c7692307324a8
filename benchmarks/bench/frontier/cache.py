"""The per-timestep cache: log d_t of each study and network on disk, filled one timestep after another (a stopped
run resumes), from which any subset's geometric mean is read."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench.frontier import log
from benchmarks.bench.frontier.networks import Network
from benchmarks.bench.frontier.studies import Study
from scripts.files import atomic_write_bytes
from scripts.scoring import ANDiInferer


def cache_path(work: Path, seed: int, network: str, study: str, timesteps: list[int], full: list[int]) -> Path:
    """Where the log d_t of one seed, network and study are kept: the full range's cache, or one per other list."""
    tag = "" if timesteps == full else f"_{len(timesteps)}t_{abs(hash(tuple(timesteps))) % 10**8:08d}"
    return work / "cache" / f"seed{seed}" / network / f"{study}{tag}.npy"


class LogCache:
    """log d_t (n_t, K, C, H, W) float16 of one study and network on disk, filled one timestep after another; a
    side file records how many are done, so a stopped run resumes where it stopped."""

    def __init__(self, path: Path, timesteps: list[int], shape: tuple[int, ...]) -> None:
        self.path, self.timesteps, self.shape = path, timesteps, (len(timesteps), *shape)
        self.state = path.with_suffix(".json")
        self.done = 0
        if self.state.is_file():
            state = json.loads(self.state.read_text())
            if state["timesteps"] == timesteps and tuple(state["shape"]) == self.shape:
                self.done = int(state["done"])
        mode = "r+" if self.done and path.is_file() else "w+"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.array = np.lib.format.open_memmap(path, mode=mode, dtype=np.float16, shape=self.shape)

    def fill(self, inferer: ANDiInferer, study: Study, network: Network) -> None:
        x_0 = study.slices()
        key = inferer.study_key(study.image) if inferer.study_noise else None  # inference's noise for this study
        start, n = time.perf_counter(), len(self.timesteps)
        for i in range(self.done, n):
            with torch.inference_mode():
                d_t = inferer.at_timesteps([self.timesteps[i]]).score_slices(x_0, network.module, study=key)
            self.array[i] = d_t.clamp_min(inferer.log_floor).log().numpy().astype(np.float16)
            self.array.flush()
            self.done = i + 1
            state = {"timesteps": self.timesteps, "shape": list(self.shape), "done": self.done}
            atomic_write_bytes(json.dumps(state).encode(), self.state)
            if self.done % 25 == 0 or self.done == n:
                log(f"  {network.name} {study.name}: {self.done}/{n} timesteps ({time.perf_counter() - start:.0f} s)")

    def geometric_means(self, subsets: dict[str, list[int]]) -> dict[str, np.ndarray]:
        """exp(mean of log d_t over each subset's indices): per-channel maps (K, C, H, W) float32 per subset, in one
        pass over the cache (each timestep is read once)."""
        acc = {name: np.zeros(self.shape[1:], np.float32) for name in subsets}
        for i in sorted({i for idx in subsets.values() for i in idx}):
            log_d = self.array[i].astype(np.float32)
            for name, idx in subsets.items():
                if i in idx:
                    acc[name] += log_d
        return {name: np.exp(acc[name] / len(idx)) for name, idx in subsets.items()}
