"""Training's arithmetic, in one process through train.yaml's own objects: the final weights are the EMA copy, the
EMA momentum is 1 - ema_decay, the learning rate follows the warm-up + cosine formula step by step, the weights
move, and a run stopped at a checkpoint and resumed ends where an uninterrupted run ends (step, learning rate) with
its EMA restored from the checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from runner import TINY_NET, tiny_dataset

from benchmarks.bench.configs import config_parser
from scripts.checkpoints import WEIGHTS_KEY

pytestmark = pytest.mark.slow  # trains (tiny) networks in this process: minutes on 2 shared cores

ITERATIONS = 4  # per epoch
SETTINGS = {"lr_start": 1e-5, "lr_peak": 1e-3, "lr_end": 3e-5, "warmup_fraction": 0.25, "ema_decay": 0.9}
EMA_COPY_STEPS = 3  # the EMA's warm start (ema_warmup copy, the authors'): it copies the weights for these iterations


@pytest.fixture(scope="module")
def healthy(tmp_path_factory) -> Path:
    """Made (synthetic) tiny healthy studies: 2 for training, 1 for validation."""
    return tiny_dataset(tmp_path_factory.mktemp("healthy"), n_healthy=3, seed=8, n_validation=1)


def trainer(datalist: Path, out: Path, max_epochs: int):
    """train.yaml's parser and trainer with its handlers attached (as `run training` attaches them), tiny and fast."""
    p = config_parser(
        ["train.yaml"],
        dataset_dir=str(datalist),
        output_dir=str(out),
        weights=str(out / "model.pt"),
        network_preset=TINY_NET,
        image_size=32,
        register=False,
        batch_size=2,
        epoch_iterations=ITERATIONS,
        max_epochs=max_epochs,
        checkpoint_interval=ITERATIONS,
        val_batches=1,
        ema_warmup="copy",
        ema_warmup_steps=EMA_COPY_STEPS,
        **SETTINGS,
    )
    engine = p.get_parsed_content("train#trainer")
    p.get_parsed_content("ema").attach(engine)  # first, as train.yaml's `training` list attaches it
    for handler in p.get_parsed_content("train#handlers"):
        handler.attach(engine)
    sampler = p.get_parsed_content("train_sampler")
    if hasattr(sampler, "attach"):
        sampler.attach(engine)
    return p, engine


def expected_lr(step: int, total: int) -> float:
    """The paper's schedule, written out: linear lr_start -> lr_peak over the warm-up, cosine to lr_end at the end."""
    s = SETTINGS
    warmup = round(total * s["warmup_fraction"])
    if step < warmup:
        return s["lr_start"] + (s["lr_peak"] - s["lr_start"]) * step / warmup
    progress = (step - warmup) / (total - warmup)
    return s["lr_end"] + (s["lr_peak"] - s["lr_end"]) * (1 + math.cos(math.pi * progress)) / 2


def params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_final_weights_are_the_ema_the_lr_follows_its_formula_and_the_weights_move(healthy, tmp_path):
    """Planted bugs: "saves the online network as the final weights", "EMA momentum ema_decay instead of
    1 - ema_decay", "the EMA averages from the first step" (no warm-start copy), "the warm-up ends a step late" /
    "the cosine forgets the warm-up offset" (the LR at step 0, at the end of the warm-up and at the end), and "the
    optimizer never steps" (the weights do not move)."""
    p, engine = trainer(healthy, tmp_path, max_epochs=2)
    network, ema = p.get_parsed_content("network"), p.get_parsed_content("ema_network")
    total = 2 * ITERATIONS
    start = params(network)
    lrs, ema_steps = [], []
    before: dict[str, list[torch.Tensor]] = {}

    @engine.on(Events.ITERATION_STARTED)
    def record_before(_):
        lrs.append(p.get_parsed_content("optimizer").param_groups[0]["lr"])
        before["ema"] = params(ema)

    @engine.on(Events.ITERATION_COMPLETED)  # after the EMA handler (attached first)
    def record_after(_):
        ema_steps.append((before["ema"], params(network), params(ema)))

    engine.run()
    assert engine.state.iteration == total
    lrs.append(p.get_parsed_content("optimizer").param_groups[0]["lr"])  # after the last step: the end of the cosine
    assert lrs == pytest.approx([expected_lr(step, total) for step in range(total + 1)], rel=1e-9)
    assert lrs[0] == pytest.approx(SETTINGS["lr_start"]) and lrs[2] == pytest.approx(SETTINGS["lr_peak"])
    assert lrs[-1] == pytest.approx(SETTINGS["lr_end"])

    for iteration, (ema_before, online, ema_after) in enumerate(ema_steps, start=1):
        m = 1.0 if iteration <= EMA_COPY_STEPS else 1.0 - SETTINGS["ema_decay"]
        for old, new_online, new in zip(ema_before, online, ema_after, strict=True):
            torch.testing.assert_close(new, (1 - m) * old + m * new_online, rtol=1e-5, atol=1e-6)

    final = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)[WEIGHTS_KEY]
    for name, value in ema.state_dict().items():
        torch.testing.assert_close(final[name], value)
    moved = [not torch.equal(a, b) for a, b in zip(start, params(network), strict=True)]
    assert all(moved), "every parameter moved"
    assert any(not torch.equal(final[n], v) for n, v in network.state_dict().items()), "the EMA is not the network"


def test_a_resumed_run_ends_where_an_uninterrupted_one_does_with_its_ema_restored(healthy, tmp_path):
    """Planted bugs: "restores the same checkpoint" / "forgets the trainer's step" (the resumed run counts its steps
    anew: more steps, another LR), "the LR schedule starts over" and "the EMA is not restored" (the resumed EMA is
    not the checkpoint's)."""
    _, whole = trainer(healthy, tmp_path / "whole", max_epochs=3)
    whole_lrs: list[float] = []
    whole.add_event_handler(Events.ITERATION_STARTED, lambda e: whole_lrs.append(e.optimizer.param_groups[0]["lr"]))
    whole.run()

    out = tmp_path / "resumed"
    _, first = trainer(healthy, out, max_epochs=3)
    first.add_event_handler(Events.ITERATION_COMPLETED(once=ITERATIONS + 1), lambda e: e.terminate())
    first.run()  # stopped after step 5: its newest checkpoint is that of step 4
    (checkpoint,) = (out / "checkpoints").glob("checkpoint_*.pt")
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert saved["trainer"]["iteration"] == ITERATIONS

    p, second = trainer(healthy, out, max_epochs=3)
    lrs: list[float] = []
    restored: dict[str, dict] = {}

    @second.on(Events.ITERATION_STARTED)
    def record(engine):
        lrs.append(engine.optimizer.param_groups[0]["lr"])
        if "ema" not in restored:
            restored["ema"] = {k: v.clone() for k, v in p.get_parsed_content("ema_network").state_dict().items()}

    second.run()
    assert second.state.iteration == whole.state.iteration == 3 * ITERATIONS
    assert second.state.epoch == whole.state.epoch == 3
    assert lrs == pytest.approx(whole_lrs[ITERATIONS:], rel=1e-12), "the resumed steps have the uninterrupted LRs"
    assert second.optimizer.param_groups[0]["lr"] == pytest.approx(whole.optimizer.param_groups[0]["lr"])
    for name, value in saved["ema"].items():
        torch.testing.assert_close(restored["ema"][name], value)


@pytest.mark.parametrize(("given", "expected"), [("false", False), ("true", True), (False, False), ("False", False)])
def test_autocast_from_a_command_line_is_a_flag(given, expected):
    """``--autocast false`` arrives as the string "false": it must turn bf16 autocast off (bool("false") is True,
    which ran training under emulated bf16, some 40 times slower on a CPU without it)."""
    inferer = config_parser(["inference.yaml", "train.yaml"], autocast=given).get_parsed_content("inferer")
    assert inferer.autocast is expected
