"""The run folder of ``defr train``: its files, the order they are written in, its claim, and ``--resume``.

Files in ``OUTPUT`` after each epoch, written in this order, each atomically:
``train_state.pt`` (epoch, optimizer, scheduler, scaler, the metrics of every epoch so far AND the
model weights: everything ``--resume`` needs, in one file, so it is consistent by construction),
``model.safetensors`` (the published checkpoint, its metadata stamped with the epoch and the
training config), ``metrics.jsonl`` (one line per epoch, rewritten from the state). A kill at any
instant leaves a state to resume from: ``metrics.jsonl`` is rewritten from the state on resume,
and a ``model.safetensors`` older than the state (a kill between the writes) is rewritten from
the state, with a message.

The output folder: a run refuses an ``OUTPUT`` that holds a run (any of the three files) unless
``resume`` (continue it) or ``overwrite`` (its three files are removed once the data and model
are ready; nothing else in the folder is touched). The run's files are claimed on the output seam
(``defr.files.OutputSet`` with ``stream=True``: written as the run goes, like ``defr video``'s) from
the moment the run writes there (the data and model are ready; nothing is written before, so a run
that fails on bad input leaves no folder) to its end: a second run into the same folder stops with an
error naming the first one's pid; the claim of a process that died is free again, and the files are
recorded as defr's in the folder's manifest. A full disk stops the run with one line; the
files of the last finished epoch stay intact and resumable.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, fields
from pathlib import Path

import torch
from tqdm import tqdm

from defr.errors import ConfigError, DefrError
from defr.files import OutputRefused, OutputSet, atomic_path, write_with
from defr.jsonio import JsonInputError, dump_json, parse_json, read_jsonl
from defr.model import DEFR, DEFRConfig, save_checkpoint
from defr.model.checkpoint import checkpoint_metadata
from defr.model.state_dicts import state_dict_problems
from defr.train.config import TrainConfig, config_values

CHECKPOINT = "model.safetensors"
TRAIN_STATE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"
RUN_FILES = (TRAIN_STATE, CHECKPOINT, METRICS_FILE)
# What a resume may change: more (or as many) epochs, and how it runs; everything else (image size, loss, lr,
# data, model, seed, ...) is part of the run and is refused when it differs from the recorded settings.
RESUMABLE = ("epochs", "workers", "device", "output")


def resume_config(output: str, config_path: str | None, overrides: dict) -> TrainConfig:
    """The settings to continue the run in ``output`` with: those it recorded, then the config file's and
    ``overrides`` (``train(resume=True)`` refuses any that change what a resume may not: ``RESUMABLE``)."""
    recorded = _recorded_settings(Path(output))
    values = {**recorded, **(config_values(config_path) if config_path else {}), **overrides, "output": output}
    return TrainConfig(**values)


def _recorded_settings(out: Path) -> dict:
    """The training settings recorded with the run in ``out`` (its checkpoint's header, else its train state)."""
    check_resumable(out)
    recorded = _published_settings(out / CHECKPOINT)
    if recorded is None:
        recorded = _state_settings(_load_state(out / TRAIN_STATE), out / TRAIN_STATE)
    known = {f.name for f in fields(TrainConfig)}
    return {k: v for k, v in recorded.items() if k in known}


def hold_output(held: ExitStack, out: Path, main: bool, resume: bool, overwrite: bool) -> None:
    """Claim ``OUTPUT`` (rank 0) for the rest of the run; nothing is written into ``OUTPUT`` before."""
    if not main:
        return
    held.enter_context(claim_output(out))
    if not resume:
        check_fresh_output(out, overwrite)  # again under the claim: a run may have finished meanwhile


@contextmanager
def claim_output(out: Path) -> Iterator[None]:
    """Claim the run's files on the output seam while inside: written as the run goes (``stream``: each file
    atomically, in ``write_epoch``'s order), not staged as one set, because every epoch must stay resumable
    after a kill; the manifest is ``OUTPUT``'s own (a run needs only ``OUTPUT`` writable, not its parent: a
    mounted volume's root). ``OutputRefused`` naming the pid of a live run that holds them. Temporaries that
    a killed run left in ``OUTPUT`` are removed once they are claimed (no other run writes there)."""
    with OutputSet({name: out / name for name in RUN_FILES}, stream=True):
        for name in RUN_FILES:
            for tmp in out.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)
        yield


def check_fresh_output(out: Path, overwrite: bool) -> None:
    held = [name for name in RUN_FILES if (out / name).exists()]
    if held and not overwrite:
        raise OutputRefused(
            f"{out}: holds a training run ({', '.join(held)}); continue it with --resume, replace it with "
            "--overwrite, or choose another --output"
        )


def make_state(
    model: DEFR, optimizer, scheduler, scaler, epoch: int, cfg: TrainConfig, history: list, run_id: str
) -> dict:
    """Everything ``--resume`` needs after ``epoch`` epochs, for one file (``history``: the metrics
    record of every epoch so far; ``run_id``: made when the run started, kept by its resumes)."""
    return {
        "run_id": run_id,
        "epoch": epoch,
        "metrics": json.dumps(history),
        "config": json.dumps(model.cfg.to_dict()),
        "train": json.dumps(asdict(cfg)),
        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
    }


def write_epoch(out: Path, model: DEFR, state: dict) -> None:
    """The train state, then the published checkpoint, then the metrics lines (the order ``resume_run``
    relies on); OutputRefused when the disk is full (the previous epoch's files stay intact)."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        # write_with keeps the OSError that torch.save would turn into its "unexpected pos" RuntimeError
        write_with(out / TRAIN_STATE, lambda f: torch.save(state, f))
        _publish(out, model, state)
        _write_metrics(out / METRICS_FILE, parse_json(state["metrics"], "the train state's metrics"))
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise OutputRefused(
            f"{out}: the disk is full ({os.strerror(e.errno)}) while writing epoch {state['epoch']}; the last finished "
            "epoch's files are intact: free space and continue with --resume"
        ) from None


def _write_metrics(path: Path, history: list[dict]) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text("".join(json.dumps(record) + "\n" for record in history))


def _publish(out: Path, model: DEFR, state: dict) -> None:
    metadata = {
        "epoch": state["epoch"],
        "train": parse_json(state["train"], "the train state's settings"),
        "run_id": state.get("run_id"),
    }
    save_checkpoint(model, out / CHECKPOINT, metadata=metadata)


def check_resumable(out: Path) -> None:
    if not (out / TRAIN_STATE).is_file():
        raise ConfigError(f"--resume: {out} has no {CHECKPOINT} and {TRAIN_STATE} to resume from (no epoch completed)")


def _load_state(state_path: Path) -> dict:
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as e:  # a file torch cannot read, or pickled code that weights_only refuses
        raise ConfigError(f"--resume: {state_path}: cannot read ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or not {"epoch", "model", "config", "optimizer"} <= set(state):
        raise ConfigError(
            f"--resume: {state_path} does not hold the model weights with the optimizer state "
            "(written by an older defr); start the run again"
        )
    return state


def _state_json(state: dict, key: str, state_path: Path) -> dict:
    try:
        value = parse_json(state[key], f"--resume: {state_path}: its {key!r} record")
    except (JsonInputError, TypeError) as e:
        raise ConfigError(str(e) if isinstance(e, JsonInputError) else f"--resume: {state_path}: bad {key!r}") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--resume: {state_path}: its {key!r} record is not a JSON object")
    return value


def _state_settings(state: dict, state_path: Path) -> dict:
    return _state_json(state, "train", state_path) if "train" in state else {}


def _published_settings(path: Path) -> dict | None:
    try:
        recorded = checkpoint_metadata(path).get("train")
    except DefrError:
        return None
    return recorded if isinstance(recorded, dict) else None


def _check_state(state: dict, state_path: Path, cfg: TrainConfig) -> DEFRConfig:
    """The state's model config, after checking the state against this run's settings, before anything is
    allocated: its epoch, the settings it recorded (``RESUMABLE``), and its tensors' shapes against its config
    (on the ``meta`` device, so a config claiming a huge model costs nothing)."""
    epoch = state["epoch"]
    if type(epoch) is not int or epoch < 0:
        raise ConfigError(f"--resume: {state_path}: 'epoch' must be a whole number >= 0, got {epoch!r}")
    if epoch > cfg.epochs:
        raise ConfigError(
            f"--resume: {state_path} has {epoch} epochs done, more than epochs={cfg.epochs}: ask for more epochs"
        )
    recorded = _state_settings(state, state_path)
    now = parse_json(dump_json(asdict(cfg), "the settings"), "the settings")  # as the state records them
    changed = [
        f"{k} {recorded[k]!r} -> {now[k]!r}"
        for k in now
        if k not in RESUMABLE and k in recorded and recorded[k] != now[k]
    ]
    if changed:
        raise ConfigError(
            f"--resume: settings differ from the run's ({'; '.join(changed)}); a resume may change only "
            f"{', '.join(RESUMABLE)}: start a new run (another --output) for other settings"
        )
    try:
        model_cfg = DEFRConfig.from_dict(_state_json(state, "config", state_path))
    except (DefrError, ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"--resume: {state_path}: its model config is not valid ({e})") from None
    if not isinstance(state["model"], dict) or not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        raise ConfigError(f"--resume: {state_path}: 'model' is not a dict of tensors")
    with torch.device("meta"):
        skeleton = DEFR(model_cfg)
    problems = state_dict_problems(skeleton, state["model"])
    if problems:
        raise ConfigError(f"--resume: {state_path}: the weights do not match the run's model: {problems}")
    return model_cfg


def load_optimizer_state(optimizer, scheduler, scaler, state: dict, state_path: Path) -> None:
    """The optimizer, schedule and scaler of the state; ConfigError for another model's (other shapes)."""
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise ConfigError(f"--resume: {state_path}: optimizer state of another model ({e})") from None
    for group in optimizer.param_groups:
        for p in group["params"]:
            moments = [v for v in optimizer.state.get(p, {}).values() if isinstance(v, torch.Tensor) and v.dim()]
            if any(m.shape != p.shape for m in moments):
                raise ConfigError(f"--resume: {state_path}: optimizer state of another model (moment shapes differ)")


def resume_run(out: Path, cfg: TrainConfig) -> tuple[DEFR, int, dict]:
    """The model and train state of the last completed epoch in ``out``, checked against this run's settings
    (``_check_state``); repairs what a kill left behind."""
    state_path = out / TRAIN_STATE
    check_resumable(out)
    state = _load_state(state_path)
    model = DEFR(_check_state(state, state_path, cfg))
    model.load_state_dict(state["model"])
    published = out / CHECKPOINT
    published_run = _published_run(published)
    if published_run is not None and state.get("run_id") is not None and published_run != state["run_id"]:
        raise ConfigError(
            f"--resume: {published.name} and {TRAIN_STATE} in {out} are of different runs (run ids "
            f"{published_run} and {state['run_id']}); nothing was changed: start a new run in another folder"
        )
    if "metrics" not in state:  # written before the state carried the metrics: keep the lines it covers
        state["metrics"] = json.dumps(_metric_lines(out / METRICS_FILE, state["epoch"]))
    _write_metrics(out / METRICS_FILE, metric_history(state))
    epoch = _published_epoch(published)
    if epoch != state["epoch"]:
        tqdm.write(
            f"--resume: {published.name} is from epoch {epoch}, {TRAIN_STATE} from epoch {state['epoch']} "
            f"(the last run stopped between the two writes): rewriting {published.name} from {TRAIN_STATE}"
        )
        _publish(out, model, state)
    return model, state["epoch"], state


def _published_run(path: Path) -> str | None:
    try:
        return checkpoint_metadata(path).get("run_id")
    except DefrError:
        return None


def _published_epoch(path: Path) -> int | None:
    try:
        return checkpoint_metadata(path).get("epoch")
    except DefrError:
        return None


def metric_history(state: dict) -> list[dict]:
    return parse_json(state["metrics"], "the train state's metrics")


def _metric_lines(path: Path, epochs: int) -> list[dict]:
    """The metric lines of epochs up to ``epochs`` (a run killed between the writes left later ones)."""
    if not path.is_file():
        return []
    # a line cut short by a kill is skipped
    records = (record for _, record in read_jsonl(path, skip_invalid=True))
    return [r for r in records if type(r.get("epoch")) is int and r["epoch"] <= epochs]
