"""Benchmark steps kept beside the code (``--keep_dir``, benchmarks/bench/kept.py): a run spread over sittings on
machines that lose the work folder goes on where it stopped, without rerunning what it evaluated."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from benchmarks import faithful
from benchmarks.bench.jobs import BenchmarkError, Step, _record_key, cached_step, recorded_step
from benchmarks.bench.kept import EVALUATION_FILES
from benchmarks.bench.settings import Settings


def figures_command(out: Path, runs: Path, value: float) -> list[str]:
    """A stand-in for a bundle evaluation: writes the evaluation's files into ``out`` and counts its runs."""
    code = (
        "import json, sys; from pathlib import Path; out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True); "
        "(out / 'metrics.json').write_text(json.dumps({'auprc': float(sys.argv[3])})); "
        "(out / 'metrics_per_subject.csv').write_text('a\\n1\\n'); (out / 'metrics.md').write_text('# m\\n'); "
        "runs = Path(sys.argv[2]); runs.write_text(runs.read_text() + 'x' if runs.is_file() else 'x')"
    )
    return [sys.executable, "-c", code, str(out), str(runs), str(value)]


def step(work: Path, s: Settings, cmd: list[str]):
    out = work / "eval" / "run_tumour"
    done = (out / "metrics.json").is_file
    return cached_step("eval_run_tumour", cmd, out / "table_command.json", done, s, work, log=lambda _: None,
                       kept_files=EVALUATION_FILES)  # fmt: skip


def test_a_kept_evaluation_comes_back_on_a_fresh_machine_without_running(tmp_path):
    """Sitting 1 runs the step and keeps its record and figures; sitting 2 starts with no work folder and finds the
    step done, its figures restored, the command not run again. Fails where nothing is kept or restored."""
    work, keep, runs = tmp_path / "work", tmp_path / "repo" / "kept", tmp_path / "runs.txt"
    s = Settings(threads=1, keep_dir=str(keep))
    cmd = figures_command(work / "eval" / "run_tumour", runs, 0.25)
    first = step(work, s, cmd)
    assert not first.reused and runs.read_text() == "x"
    kept = keep / "eval" / "run_tumour"
    assert sorted(p.name for p in kept.iterdir()) == sorted([*EVALUATION_FILES, "table_command.json"])
    assert json.loads((kept / "table_command.json").read_text())["finished"] is True

    shutil.rmtree(work)  # a fresh machine: the work folder is gone, the kept folder came with the repository
    second = step(work, s, cmd)
    assert second.reused and second.seconds == first.seconds
    assert runs.read_text() == "x", "the kept step must not run again"
    assert json.loads((work / "eval" / "run_tumour" / "metrics.json").read_text()) == {"auprc": 0.25}
    again = recorded_step("eval_run_tumour", cmd, work / "eval" / "run_tumour" / "table_command.json", s, work)
    assert again.seconds == first.seconds and not again.resumed


def test_a_kept_step_of_other_settings_is_run_and_kept_anew(tmp_path):
    """A kept record of another command is not restored: the step runs and replaces it. Without keep_dir nothing is
    kept. A work folder's own record of other settings is still refused."""
    work, keep, runs = tmp_path / "work", tmp_path / "kept", tmp_path / "runs.txt"
    s = Settings(threads=1, keep_dir=str(keep))
    step(work, s, figures_command(work / "eval" / "run_tumour", runs, 0.25))
    shutil.rmtree(work)
    step(work, s, figures_command(work / "eval" / "run_tumour", runs, 0.5))
    assert runs.read_text() == "xx"
    assert json.loads((keep / "eval" / "run_tumour" / "metrics.json").read_text()) == {"auprc": 0.5}
    with pytest.raises(BenchmarkError, match="holds a step of other settings"):
        step(work, s, figures_command(work / "eval" / "run_tumour", runs, 0.75))

    bare = tmp_path / "bare"
    step(bare, Settings(threads=1), figures_command(bare / "eval" / "run_tumour", runs, 0.25))
    assert not (keep / "bare").exists() and runs.read_text() == "xxx"


def keep_evaluation(work: Path, keep: Path, run: tuple) -> Path:
    """Put a finished evaluation of ``run`` (faithful.evaluate_step's arguments) into the kept folder, as an earlier
    sitting would have left it; returns its folder in the work folder."""
    out, cmd = faithful.evaluate_step(work, *run)
    target = keep / out.relative_to(work)
    target.mkdir(parents=True)
    for file in EVALUATION_FILES:
        (target / file).write_text("{}")
    record = {"command": _record_key(cmd), "finished": True, "seconds": 12.0}
    (target / "table_command.json").write_text(json.dumps(record))
    return out


def test_a_training_whose_evaluations_are_kept_is_not_run(tmp_path, monkeypatch):
    """faithful.train_unless_evaluated: every evaluation of a model kept (by the exact commands evaluate_step builds,
    the weights' path among them) -> no training, its kept wall time; one evaluation missing -> the training runs."""
    work, keep = tmp_path / "work", tmp_path / "kept"
    s = Settings(threads=1, keep_dir=str(keep))
    datalist = tmp_path / "datalist.json"
    weights = faithful.train_step(work, "t1_t2", datalist, None, extra={"modalities": "['t1','t2']"})[0]
    runs = [("t1_t2", family, datalist, {"weights": weights, "seed": 0}) for family in faithful.FAMILIES]
    trained = []
    ran = Step("train_t1_t2", 99.0, False)
    monkeypatch.setattr(faithful, "train", lambda *a, **k: trained.append(a[1]) or (weights, ran))
    for run in runs[:-1]:
        keep_evaluation(work, keep, run)
    args = (work, "t1_t2", datalist, None, s, runs)
    extra = {"modalities": "['t1','t2']"}
    assert faithful.train_unless_evaluated(*args, extra=extra) == ran and trained == ["t1_t2"]

    keep_evaluation(work, keep, runs[-1])
    _, train_cmd, train_record = faithful.train_step(work, "t1_t2", datalist, None, extra=extra)
    kept_train = keep / train_record.relative_to(work)
    kept_train.parent.mkdir(parents=True)
    record = {"command": _record_key(train_cmd), "finished": True, "seconds": 7563.0, "resumed": True}
    kept_train.write_text(json.dumps(record))
    found = faithful.train_unless_evaluated(*args, extra=extra)
    assert (found.seconds, found.reused, found.resumed) == (7563.0, True, True)
    assert trained == ["t1_t2"], "every evaluation kept: the training must not run"
    assert all((work / "eval" / f"t1_t2_{f}" / "metrics.json").is_file() for f in faithful.FAMILIES)


def test_v2_reads_the_default_models_kept_evaluation(tmp_path, monkeypatch):
    """v2.py's default model is faithful.py's range_pyramid: with --default_eval cached, faithful.py's kept evaluation
    comes back and is read, not run; where there is none (here: another work folder, whose command names other
    paths), v2.py stops with one line rather than run a second copy of faithful.py's step; with --default_eval run it
    evaluates the default itself."""
    from benchmarks import v2

    work, keep = tmp_path / "work", tmp_path / "kept"
    s = Settings(threads=1, keep_dir=str(keep))
    datalist, weights = tmp_path / "datalist.json", work / "train" / "range_pyramid" / "model.pt"
    out = keep_evaluation(work, keep, ("range", "tumour", datalist, {"weights": weights, "seed": 0}))
    ran = []
    monkeypatch.setattr(v2, "evaluate", lambda *a, **k: ran.append(a[1]) or (a[1], Step("eval", 1.0, False)))
    found, step = v2.default_evaluation(work, "tumour", datalist, weights, 0, 0, "cached", s)
    assert (found, step.seconds, step.reused) == (out, 12.0, True)
    assert (out / "metrics.json").is_file() and ran == []
    other = tmp_path / "fresh"  # another work folder: the kept step's command names the first one's paths
    with pytest.raises(BenchmarkError, match="faithful.py has not evaluated the default model"):
        v2.default_evaluation(other, "tumour", datalist, weights, 0, 0, "cached", s)
    assert not (other / "eval" / "range_tumour").exists() and ran == []
    assert v2.default_evaluation(other, "tumour", datalist, weights, 0, 0, "run", s)[0] == "default"


def test_kept_weights_come_back_and_the_training_is_not_run_again(tmp_path, monkeypatch):
    """With keep_weights, a finished training's weights are kept beside its record: a fresh work folder gets them
    back without training. Without keep_weights, only the record is kept and the training runs again."""
    runs = tmp_path / "runs.txt"

    def stand_in(work, name, *a, **k):  # a training that writes its weights and counts its runs
        out = work / "train" / name
        code = (
            "import sys; from pathlib import Path; w = Path(sys.argv[1]); w.parent.mkdir(parents=True, exist_ok=True); "
            "w.write_bytes(b'weights'); r = Path(sys.argv[2]); "
            "r.write_text(r.read_text() + 'x' if r.is_file() else 'x')"
        )
        weights = out / "model.pt"
        return weights, [sys.executable, "-c", code, str(weights), str(runs)], out / "table_command.json"

    monkeypatch.setattr(faithful, "train_step", stand_in)
    for keep_weights, expected_runs in ((True, "x"), (False, "xxx")):
        work, keep = tmp_path / f"work_{keep_weights}", tmp_path / f"kept_{keep_weights}"
        s = Settings(threads=1, keep_dir=str(keep), keep_weights=keep_weights)
        weights, _ = faithful.train(work, "t1_t2", tmp_path / "datalist.json", None, s)
        assert (keep / "train" / "t1_t2" / "model.pt").is_file() == keep_weights
        shutil.rmtree(work)  # a fresh machine
        again, _ = faithful.train(work, "t1_t2", tmp_path / "datalist.json", None, s)
        assert again.read_bytes() == b"weights"
        assert runs.read_text() == expected_runs, "kept weights: trained once; not kept: trained in each sitting"


def test_a_failed_benchmark_step_ends_with_one_error_line(capsys):
    """Planted bugs: the BenchmarkError's traceback reaches the terminal, or the run exits 0."""
    from benchmarks.bench.jobs import BenchmarkError
    from benchmarks.bench.main import run_benchmark

    def main() -> None:
        raise BenchmarkError("/w/train/v2 holds a step of other settings")

    with pytest.raises(SystemExit) as exited:
        run_benchmark(main)
    assert exited.value.code == 1
    assert capsys.readouterr().err == "error: /w/train/v2 holds a step of other settings\n"
    with pytest.raises(SystemExit) as exited:
        run_benchmark(lambda: None)
    assert exited.value.code is None or exited.value.code == 0


def checkpointing_training(out: Path, starts: Path, stop: Path) -> list[str]:
    """A stand-in training with train.yaml's checkpoint folder: it resumes from its newest ``checkpoint_*=N.pt``
    (noting N in ``starts``), writes checkpoint N + 1, and then fails where the file ``stop`` exists (a sitting that
    ends) or writes its weights."""
    code = (
        "import re, sys; from pathlib import Path; out = Path(sys.argv[1]); c = out / 'checkpoints'; "
        "c.mkdir(parents=True, exist_ok=True); found = [int(re.findall(r'=(\\d+)', p.name)[0]) for p in "
        "c.glob('checkpoint_*.pt')]; n = max(found, default=0); s = Path(sys.argv[2]); "
        "s.write_text((s.read_text() if s.is_file() else '') + f'{n} '); "
        "(c / f'checkpoint_iteration={n + 1}.pt').write_bytes(b'state %d' % (n + 1)); "
        "sys.exit(1) if Path(sys.argv[3]).is_file() else (out / 'model.pt').write_bytes(b'weights')"
    )
    return [sys.executable, "-c", code, str(out), str(starts), str(stop)]


def train_checkpointed(work: Path, s: Settings, starts: Path, fail: bool, tag: str = "run"):
    out = work / "train" / "v2_seed1"
    stop = starts.parent / "stop"
    stop.write_text("") if fail else stop.unlink(missing_ok=True)
    cmd = checkpointing_training(out, starts, stop) + [tag]
    return cached_step("train_v2_seed1", cmd, out / "table_command.json", (out / "model.pt").is_file, s, work,
                       log=lambda _: None, kept_files=("model.pt",), checkpoints=out / "checkpoints")  # fmt: skip


def test_an_unfinished_training_resumes_from_its_kept_checkpoint_on_a_fresh_machine(tmp_path):
    """Sitting 1 ends in the middle of a training: its newest checkpoint is kept with its command. Sitting 2, with no
    work folder, puts it back and the training resumes from it (not from 0); when it finishes, the weights are kept
    and the checkpoint is dropped. A kept checkpoint of another command is not taken. Planted bugs: nothing kept on
    failure, the checkpoint not restored, restored for another command, or left behind after the training."""
    work, keep, starts = tmp_path / "work", tmp_path / "kept", tmp_path / "starts.txt"
    s = Settings(threads=1, keep_dir=str(keep), keep_weights=True)
    kept_checkpoints = keep / "train" / "v2_seed1" / "checkpoints"
    with pytest.raises(BenchmarkError):
        train_checkpointed(work, s, starts, fail=True)
    kept = sorted(p.name for p in kept_checkpoints.iterdir())
    assert kept == ["checkpoint_command.json", "checkpoint_iteration=1.pt"]
    shutil.rmtree(work)
    with pytest.raises(BenchmarkError):
        train_checkpointed(work, s, starts, fail=True)  # sitting 2: resumes from 1, ends at 2
    assert sorted(p.name for p in kept_checkpoints.glob("*.pt")) == ["checkpoint_iteration=2.pt"]
    assert starts.read_text() == "0 1 "

    other = tmp_path / "other"  # another command (other settings): the kept checkpoint is not its own
    shutil.copytree(keep, other)
    s_other = Settings(threads=1, keep_dir=str(other), keep_weights=True)
    train_checkpointed(tmp_path / "work_other", s_other, starts, fail=False, tag="other")
    assert starts.read_text() == "0 1 0 "

    shutil.rmtree(work)
    step = train_checkpointed(work, s, starts, fail=False)  # sitting 3: resumes from 2 and finishes
    assert starts.read_text() == "0 1 0 2 " and step.resumed
    assert (keep / "train" / "v2_seed1" / "model.pt").read_bytes() == b"weights"
    assert not kept_checkpoints.exists(), "a finished training's checkpoint must not stay in the kept folder"


def test_two_processes_on_one_step_run_it_once(tmp_path):
    """v2.py and faithful.py share the default's trainings: a second caller of a running step waits for it and then
    finds it done, rather than starting the same training in the same folder. Planted bug: no lock -> two runs."""
    import threading

    work, runs = tmp_path / "work", tmp_path / "runs.txt"
    s = Settings(threads=1)
    out = work / "eval" / "run_tumour"
    cmd = figures_command(out, runs, 0.25)
    cmd[2] = "import time; time.sleep(1.5); " + cmd[2]
    done = (out / "metrics.json").is_file
    steps = []

    def one() -> None:
        steps.append(cached_step("eval_run_tumour", cmd, out / "table_command.json", done, s, work, log=lambda _: None))

    callers = [threading.Thread(target=one) for _ in range(2)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert runs.read_text() == "x"
    assert sorted(step.reused for step in steps) == [False, True]


def test_a_resumed_step_is_marked_in_the_wall_times():
    """A step resumed after an interruption counts its last attempt only, and the report says so by its name; a step
    run whole is not marked. Planted bug: the resumed flag dropped on the way to the report."""
    from benchmarks.bench.report import RESUMED_NOTE, wall_time_lines

    lines = wall_time_lines({"train v2 seed 1": Step("train_v2_seed1", 3000.0, True, resumed=True),
                             "train v2 seed 0": Step("train_v2", 7492.0, True), "made data": 60.0}, 5.0)  # fmt: skip
    assert [line for line in lines if RESUMED_NOTE in line] == [f"- train v2 seed 1: 50.0 min ({RESUMED_NOTE})"]
    assert "- train v2 seed 0: 124.9 min" in lines and "- made data: 1.0 min" in lines


def test_a_noted_step_carries_its_note_to_the_wall_times_and_from_the_kept_copy(tmp_path, capsys):
    """A step paused for checks is noted on its record (``benchmarks.note_step``); the note reaches the report beside
    its time, from the work folder and from the kept copy, and only the note changes. A record that is not a finished
    step gets one error line, and the others are still noted. Planted bugs: the note dropped when a record is read;
    the note written over the seconds."""
    from benchmarks.bench.report import wall, wall_time_lines
    from benchmarks.note_step import main

    work, keep_dir, runs = tmp_path / "work", tmp_path / "kept", tmp_path / "runs.txt"
    s = Settings(threads=1, keep_dir=str(keep_dir))
    out = work / "eval" / "run_tumour"
    cmd = figures_command(out, runs, 0.25)
    first = step(work, s, cmd)
    record, kept = out / "table_command.json", keep_dir / "eval" / "run_tumour" / "table_command.json"
    before = json.loads(record.read_text())
    unfinished = tmp_path / "unfinished.json"
    unfinished.write_text(json.dumps({"command": ["x"], "finished": False}))
    note = "includes 26 min paused for checks"
    assert main(["--note", note, str(record), str(unfinished), str(kept)]) == 1
    assert capsys.readouterr().err == f"error: {unfinished}: not a finished step's record\n"
    assert json.loads(record.read_text()) == {**before, "note": note}
    for place in (record, kept):
        found = recorded_step("eval_run_tumour", cmd, place, Settings(threads=1), place.parents[2])
        assert (found.seconds, found.note) == (first.seconds, note)
    shutil.rmtree(work)  # a later sitting's fresh work folder: the kept record comes back with its note
    again = step(work, s, cmd)
    assert again.reused and again.note == note and runs.read_text() == "x"
    lines = wall_time_lines({"run tumour": again}, 1.0)
    assert [line for line in lines if note in line] == [f"- run tumour: {again.seconds / 60:.1f} min ({note})"]
    assert f"eval_run_tumour: {note}" in wall([again])
    assert main(["--note", "", str(record)]) == 0 and "note" not in json.loads(record.read_text())


def test_a_kept_evaluation_from_before_amp_was_pinned_is_the_same_step():
    """The benchmarks pin ``--amp false`` on their evaluations (inference's ``auto`` would pick bf16 on a CPU with
    it): a kept evaluation recorded without it (made on the project's earlier CPU, where auto was float32) is the same
    step, wherever the option now sits in the command; one that asks for bf16 is not, and no other workflow gains the
    option. Planted bugs: options compared by position; the pinned option added to trainings."""
    from benchmarks.bench.kept import same_command

    old = ["-m", "monai.bundle", "run", "evaluate", "--config_file", "['a.yaml']", "--bundle_root", "bundle",
           "--save_maps", "false", "--report_note", "made", "--seed", "0"]  # fmt: skip
    now = old[:10] + ["--amp", "false"] + old[10:]
    assert same_command({"command": old}, now)
    assert not same_command({"command": old}, old[:10] + ["--amp", "true"] + old[10:])
    assert not same_command({"command": old}, [*now[:-1], "1"])
    training = ["-m", "monai.bundle", "run", "training", "--seed", "0", "--autocast", "false"]
    assert same_command({"command": training}, training)
    assert not same_command({"command": training}, [*training, "--amp", "false"])
    other = ["-c", "print(1)", "--seed", "0"]  # not a bundle command: compared as it is
    assert same_command({"command": other}, other) and not same_command({"command": other}, other[::-1])


def test_faithful_runs_its_chains_side_by_side_in_a_fixed_report_order(tmp_path, monkeypatch):
    """faithful.py --jobs 2: each model's training and evaluations run as one chain, two at once, the newest training
    first; the report's figures come in training-then-seed order whatever finished first, and every step is listed.
    Planted bugs: outputs in completion order; a chain dropped; the 'before' weights trained."""
    import argparse
    import threading
    import time

    work = tmp_path / "work"
    args = argparse.Namespace(seeds=2, train_seeds=2, jobs=2)
    tests = {family: tmp_path / f"{family}.json" for family in faithful.FAMILIES}
    trained, started, lock = [], [], threading.Lock()

    def fake_train(work_, model, train_list, noise, s, runs, seed=0, **_):
        with lock:
            trained.append((model, seed))
        time.sleep(0.2 if seed == 1 else 0.0)  # the newest training is the slow one
        return Step(f"train_{model}", 1.0, False)

    def fake_evaluate(work_, tag, family, datalist, overrides, s, profiles=()):
        with lock:
            started.append(tag)
        return work_ / "eval" / f"{tag}_{family}", Step(tag, 2.0, False)

    monkeypatch.setattr(faithful, "train_unless_evaluated", fake_train)
    monkeypatch.setattr(faithful, "evaluate", fake_evaluate)
    s = Settings(threads=1)
    outs, steps = faithful.run_all(args, work, tmp_path / "train.json", tests, tmp_path / "before.pt", s)
    assert sorted(trained) == [(m, k) for m in ("range_pyramid", "range_pyramid_authors") for k in (0, 1)]
    assert trained[:2] == [("range_pyramid", 1), ("range_pyramid_authors", 1)], "the newest trainings start first"
    for run in ("before", "labels", "range", "authors_pyramid"):
        k_max = 1 if run in ("before", "labels") else 2
        expected = [faithful.run_tag(run, k, n) for k in range(k_max) for n in range(2)]
        for family in faithful.FAMILIES:
            assert [p.name for p in outs[run, family]] == [f"{tag}_{family}" for tag in expected]
    assert len(started) == len(set(started)) * len(faithful.FAMILIES) == (2 + 4) * 2 * 4
    assert len(steps) == 4 + len(started)


def test_the_faithful_report_gives_mean_and_sd_over_every_run(tmp_path, monkeypatch):
    """faithful.py's three sections from made evaluation outputs (2 trainings x 2 noise seeds of the retrained runs):
    each cell of the chain table is the mean ± SD over the runs of its row, the guard table reads training 0, seed 0,
    and the first line names the command that printed it. Planted bugs: one run read for all; the SD dropped."""
    import argparse
    import csv

    args = argparse.Namespace(seeds=2, train_seeds=2, n_test=1, median_filter=5, guard=0.5)
    monkeypatch.setattr(sys, "argv", ["faithful.py", "--seeds", "2", "--train_seeds", "2"])
    outs: dict[tuple[str, str], list[Path]] = {}
    for run, runs in (("before", 2), ("labels", 2), ("range", 4), ("authors_pyramid", 4)):
        for family in faithful.FAMILIES:
            for i in range(runs):
                out = tmp_path / f"{run}_{i}_{family}"
                out.mkdir()
                rows = [
                    {"voxel_set": v, "median_filter": mf, "auprc": 0.1 * (i + 1), "ceil_dice": 0.5, "dice_yen": 0.4,
                     "segmented_fraction_median": 0.01}
                    for v in ("volume", "brain") for mf in (0, 3, 5)
                ]  # fmt: skip
                (out / "metrics.json").write_text(json.dumps({"metrics": rows}))
                with open(out / "metrics_per_subject.csv", "w", newline="") as f:
                    names = ["voxel_set", "median_filter", "segmented_fraction", "dice_yen", "label_voxels",
                             "brain_voxels"]  # fmt: skip
                    writer = csv.DictWriter(f, names)
                    writer.writeheader()
                    for v in ("volume", "brain"):
                        for mf in (0, 3, 5):
                            writer.writerow(dict(zip(names, [v, mf, 0.6 if i else 0.01, 0.3, 10, 1000], strict=True)))
                outs.setdefault((run, family), []).append(out)
    sections = faithful.chain_section(args, outs) + faithful.settings_section(outs) + faithful.guard_section(args, outs)
    text = "\n".join(sections)
    assert text.splitlines()[2].startswith("Printed by `python -m benchmarks.faithful --seeds 2 --train_seeds 2` (")
    row = next(line for line in text.splitlines() if line.startswith("| 2. + input range"))
    assert "0.250 ± 0.129" in row, row  # AUPRC 0.1, 0.2, 0.3, 0.4 over 2 trainings x 2 seeds
    before = next(line for line in text.splitlines() if line.startswith("| 0. before"))
    assert "0.150 ± 0.071" in before, before  # the 'before' weights: 2 noise seeds
    guard_rows = [line for line in text.splitlines() if line.startswith("| range | volume | 5 |") and "±" not in line]
    assert len(guard_rows) == len(faithful.FAMILIES)
    assert all("| 0.300 | 1.0% |" in line for line in guard_rows), "the guard table reads training 0, seed 0"


def test_the_faithful_report_compares_the_training_noise_training_by_training(tmp_path):
    """The pyramid section: per family and training, each model's AUPRC over its noise seeds and their difference
    paired by seed; a family says 'ahead in every run' only where every run of one model beats every run of the
    other. Planted bugs: the trainings' runs mixed (seeds of training 1 read as training 0); differences unpaired; a
    lead in the means called a lead in every run."""
    import argparse

    args = argparse.Namespace(seeds=2, train_seeds=2, median_filter=5)
    auprc = {  # (range, authors_pyramid): training 0 seeds 0, 1, then training 1 seeds 0, 1
        "tumour": ([0.50, 0.60, 0.30, 0.32], [0.40, 0.45, 0.35, 0.36]),  # the order flips between trainings
        "ms": ([0.20, 0.22, 0.21, 0.23], [0.10, 0.12, 0.11, 0.13]),
        "cortical": ([0.10, 0.11, 0.12, 0.13], [0.14, 0.15, 0.16, 0.17]),
        "bright": ([0.90, 0.50, 0.90, 0.90], [0.80, 0.80, 0.80, 0.80]),  # ahead in the means, not in every run
    }
    outs: dict[tuple[str, str], list[Path]] = {}
    for family in faithful.FAMILIES:
        for run, values in zip(("range", "authors_pyramid"), auprc[family], strict=True):
            for i, value in enumerate(values):
                out = tmp_path / f"{run}_{i}_{family}"
                out.mkdir()
                rows = [{"voxel_set": v, "median_filter": mf, "auprc": value if v == "volume" and mf == 5 else 0.0}
                        for v in ("volume", "brain") for mf in (0, 3, 5)]  # fmt: skip
                (out / "metrics.json").write_text(json.dumps({"metrics": rows}))
                outs.setdefault((run, family), []).append(out)
    lines = "\n".join(faithful.pyramid_section(args, outs)).splitlines()
    name = faithful.FAMILY_NAMES
    assert f"| {name['tumour']} | 0 | 0.550 ± 0.071 | 0.425 ± 0.035 | 0.125 ± 0.035 |" in lines
    assert f"| {name['tumour']} | 1 | 0.310 ± 0.014 | 0.355 ± 0.007 | -0.045 ± 0.007 |" in lines
    assert f"- {name['tumour']}: neither ahead in every run." in lines
    assert f"- {name['ms']}: the equation ahead in every run." in lines
    assert f"- {name['cortical']}: the authors' construction ahead in every run." in lines
    assert f"- {name['bright']}: neither ahead in every run." in lines
