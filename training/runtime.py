"""What both training scripts share: the Accelerator, resumable state, metrics, checkpoints and the progress bar."""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from .batch_checks import BatchChecks
from .config import ConfigError, load_config, require

LOG = logging.getLogger("latentsync.training")
STATE_DIR = "state"
CHECKPOINT_DIR = "checkpoints"
STEP_FILE = "training_step.json"
PRECISIONS = {"no", "fp16", "bf16"}


def parse_args(prog: str, argv: Sequence[str] | None = None) -> DictConfig:
    parser = argparse.ArgumentParser(
        prog=prog, description="Overrides are omegaconf dot-list items (data.batch_size=4); shortcuts "
                               "data_dir=DIR output_dir=DIR max_steps=N work with every config.")
    parser.add_argument("--config", required=True, help="a YAML file or the name of one in training/configs/")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    try:
        return load_config(args.config, args.overrides)
    except (ConfigError, FileNotFoundError) as exc:
        parser.error(str(exc))


def make_accelerator(cfg: DictConfig):
    """Accelerator with the config's mixed precision (fp16 needs a GPU: on a CPU it falls back to no autocast with
    a warning), TensorBoard logging under `<output_dir>/logs`, and the per-process seed `run.seed + rank`."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed

    output_dir = Path(require(cfg, "run.output_dir")).expanduser()
    precision = str(cfg.run.mixed_precision)
    if precision not in PRECISIONS:
        raise ConfigError(f"run.mixed_precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and not torch.cuda.is_available():
        LOG.warning("run.mixed_precision=fp16 needs a CUDA GPU; training in fp32 on this machine")
        precision = "no"
    project = ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs"))
    # Several processes without CUDA (`accelerate launch --multi_gpu --num_processes N` on a CPU machine): DDP over
    # gloo on the CPU; accelerate only picks that backend when asked for the CPU.
    cpu_ddp = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(mixed_precision=precision, log_with="tensorboard", project_config=project, cpu=cpu_ddp)
    set_seed(int(cfg.run.seed) + accelerator.process_index)
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s")
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, output_dir / "config.yaml")
        accelerator.init_trackers("tensorboard")
    accelerator.wait_for_everyone()
    return accelerator, output_dir


def frozen_dtype(accelerator) -> torch.dtype:
    """dtype of the frozen networks: the mixed-precision dtype (as the official fp16 VAE / SyncNet), else fp32."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)


def step_generator(seed: int, rank: int, step: int, micro: int, device) -> torch.Generator:
    """The private generator of one micro-step of one process: noise, timesteps and VAE posterior samples are a
    function of (seed, rank, step, micro), so a resumed run draws exactly what the uninterrupted one would have."""
    g = torch.Generator(device=device if torch.device(device).type == "cuda" else "cpu")
    return g.manual_seed(((int(seed) * 1_000_003 + rank) * 1_000_003 + step) * 64 + micro)


# ---------------------------------------------------------------------------------------------------------------
# resumable state


def _state_dirs(output_dir: Path) -> list[tuple[int, Path]]:
    out = []
    for p in (output_dir / STATE_DIR).glob("step-*"):
        m = re.fullmatch(r"step-(\d+)", p.name)
        if m and (p / STEP_FILE).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def resume_state(accelerator, cfg: DictConfig, output_dir: Path) -> int:
    """`ckpt.resume`: "auto" = the latest state under `<output_dir>/state` if any, a path, or null. Loads model,
    optimizer, LR scheduler and RNG states with `accelerator.load_state`; returns the step to continue from."""
    choice = cfg.ckpt.get("resume", "auto")
    if choice in (None, "", "none", False):
        return 0
    if choice == "auto":
        states = _state_dirs(output_dir)
        if not states:
            return 0
        path = states[-1][1]
    else:
        path = Path(str(choice)).expanduser()
        if not (path / STEP_FILE).is_file():
            raise FileNotFoundError(f"ckpt.resume={path} is not a saved training state (no {STEP_FILE})")
    accelerator.load_state(str(path))
    step = int(json.loads((path / STEP_FILE).read_text())["global_step"])
    LOG.info("resumed from %s at step %d", path, step)
    return step


def save_state(accelerator, output_dir: Path, step: int, keep: int) -> Path:
    """`accelerator.save_state` into `<output_dir>/state/step-N` (+ the step), keeping the `keep` newest."""
    path = output_dir / STATE_DIR / f"step-{step:07d}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        (path / STEP_FILE).write_text(json.dumps({"global_step": step}))
        for _, old in _state_dirs(output_dir)[:-max(1, keep)]:
            shutil.rmtree(old)  # our own state folders only
    accelerator.wait_for_everyone()
    return path


# ---------------------------------------------------------------------------------------------------------------
# metrics, progress


class Metrics:
    """Per-step scalars: TensorBoard through the accelerator, plus `<output_dir>/logs/metrics.jsonl` (main
    process) and `<output_dir>/logs/samples-rank{r}.jsonl` (the sample ids each process trained on)."""

    def __init__(self, accelerator, output_dir: Path):
        self.accelerator = accelerator
        logs = output_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.metrics = logs / "metrics.jsonl"
        self.samples = logs / f"samples-rank{accelerator.process_index}.jsonl"

    def log(self, step: int, values: dict[str, float]) -> None:
        if self.accelerator.is_main_process:
            self.accelerator.log(values, step=step)
            with open(self.metrics, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": step, **values}) + "\n")

    def samples_seen(self, step: int, sample_ids: list[int], clips: list[int]) -> None:
        with open(self.samples, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, "sample_ids": sample_ids, "clips": clips}) + "\n")


def reduce_mean(accelerator, value: torch.Tensor) -> float:
    """Mean of a scalar over all processes."""
    return float(accelerator.reduce(value.detach().float().reshape(1).to(accelerator.device), "mean").item())


class Progress:
    """tqdm bar on the main process with the loss and the step time."""

    def __init__(self, accelerator, start: int, total: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=start, desc="steps", dynamic_ncols=True,
                        disable=not accelerator.is_main_process, file=sys.stderr)
        self.t = time.perf_counter()

    def update(self, **values: float) -> None:
        now = time.perf_counter()
        self.bar.set_postfix({**{k: f"{v:.4f}" for k, v in values.items()}, "s/step": f"{now - self.t:.2f}"})
        self.t = now
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    path = output_dir / CHECKPOINT_DIR / f"step-{step:07d}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------------
# the loop both scripts run


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


def make_loader(dataset, cfg: DictConfig, accelerator, start_step: int):
    """DataLoader over this process's share of the global sample ids, from `start_step` on (see StepSampler)."""
    from .data.sampler import StepSampler

    accum = int(cfg.run.gradient_accumulation_steps)
    sampler = StepSampler(int(cfg.data.batch_size), accelerator.process_index, accelerator.num_processes,
                          start_micro_step=start_step * accum,
                          repeat_first=bool(cfg.data.get("overfit_one_batch", False)))
    workers = int(cfg.data.num_workers)
    return torch.utils.data.DataLoader(dataset, batch_size=int(cfg.data.batch_size), sampler=sampler,
                                       num_workers=workers, persistent_workers=workers > 0,
                                       pin_memory=torch.cuda.is_available())


def make_optimizer(cfg: DictConfig, params: list, num_processes: int):
    """AdamW over `params` (lr x processes with `optimizer.scale_lr`) and a factory for the diffusers LR schedule
    (built on the prepared optimizer; stepped once per optimizer step)."""
    from diffusers.optimization import get_scheduler

    opt = cfg.optimizer
    lr = float(opt.lr) * (num_processes if opt.get("scale_lr") else 1)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=float(opt.get("weight_decay", 0.01)))
    return optimizer, lambda o: get_scheduler(str(opt.lr_scheduler), optimizer=o,
                                             num_warmup_steps=int(opt.lr_warmup_steps),
                                             num_training_steps=int(cfg.run.max_train_steps))


def prepare_and_resume(accelerator, cfg: DictConfig, output_dir: Path, model, optimizer, make_lr):
    """accelerator.prepare(model, optimizer), the LR schedule, and the resumed step (0 for a fresh run)."""
    model, optimizer = accelerator.prepare(model, optimizer)
    lr_scheduler = make_lr(optimizer)
    step = resume_state(accelerator, cfg, output_dir)
    for _ in range(step):  # the LR schedule is a function of the step
        lr_scheduler.step()
    return model, optimizer, lr_scheduler, step


def train_loop(cfg: DictConfig, accelerator, output_dir: Path, model, optimizer, lr_scheduler, dataset,
               step: int, losses_of, export, validate=None) -> None:
    """Optimizer steps until `run.max_train_steps`, each over `run.gradient_accumulation_steps` micro-batches.

    `losses_of(batch, generator) -> {"loss": total, name: part, ...}`; `export(model, step)` writes a checkpoint
    (main process); `validate(model, step) -> {name: value}` (main process) every `validation.every` steps.
    With `data.overfit_one_batch` the same batch, noise and timesteps are used every step.
    """
    import contextlib

    max_steps, accum = int(cfg.run.max_train_steps), int(cfg.run.gradient_accumulation_steps)
    metrics = Metrics(accelerator, output_dir)
    progress = Progress(accelerator, step, max_steps)
    loader = iter(make_loader(dataset, cfg, accelerator, step))
    params = [p for p in model.parameters() if p.requires_grad]
    seed, rank = int(cfg.run.seed), accelerator.process_index
    overfit = bool(cfg.data.get("overfit_one_batch", False))
    every = int(cfg.validation.get("every", 0) or 0)
    checks = BatchChecks(accelerator, lambda c: str(dataset.clips.clips[c]), len(dataset.clips.skipped))
    while step < max_steps:
        started = time.perf_counter()
        model.train()
        totals: dict[str, float] = {}
        seen_ids, seen_clips = [], []
        for micro in range(accum):
            batch = to_device(next(loader), accelerator.device)
            seen_ids += batch["sample_id"].tolist()
            seen_clips += batch["clip"].tolist()
            generator = step_generator(seed, rank, 0 if overfit else step, micro, accelerator.device)
            sync_ctx = accelerator.no_sync(model) if micro < accum - 1 else contextlib.nullcontext()
            with sync_ctx:
                losses = losses_of(batch, generator)
                checks.after_losses(losses, batch, step + 1)
                accelerator.backward(losses["loss"] / accum)
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + reduce_mean(accelerator, v) / accum
        if float(cfg.optimizer.max_grad_norm) > 0:
            accelerator.clip_grad_norm_(params, float(cfg.optimizer.max_grad_norm))
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        metrics.samples_seen(step, seen_ids, seen_clips)
        metrics.log(step, {**{k if k == "loss" else f"loss/{k}": v for k, v in totals.items()},
                           "lr": lr_scheduler.get_last_lr()[0], "time/step_s": time.perf_counter() - started,
                           **checks.step_metrics()})
        progress.update(loss=totals["loss"])
        last = step == max_steps
        if accelerator.is_main_process and (step % int(cfg.ckpt.save_ckpt_steps) == 0 or last):
            export(accelerator.unwrap_model(model), step)
        if step % int(cfg.ckpt.save_state_steps) == 0 or last:
            save_state(accelerator, output_dir, step, int(cfg.ckpt.keep_states))
        if validate is not None and every and (step % every == 0 or last):
            if accelerator.is_main_process:
                metrics.log(step, validate(accelerator.unwrap_model(model), step))
            accelerator.wait_for_everyone()
    progress.close()
    accelerator.end_training()
