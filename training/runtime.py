"""What both training scripts share: the Accelerator, resumable state, metrics, checkpoints and the progress bar."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
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


TRACKERS = {"tensorboard", "wandb", "none"}


def make_accelerator(cfg: DictConfig):
    """Accelerator with the config's mixed precision (fp16 needs a GPU: on a CPU it falls back to no autocast with
    a warning), gradient accumulation (`run.gradient_accumulation_steps`, through `accelerator.accumulate`), the
    process-group timeout (`run.process_group_timeout_s`: the other ranks wait that long for the main process's
    validation and checkpoint export), resumable states rotated by accelerate (`ckpt.keep_states`), a tracker
    (`run.log_with`) under `<output_dir>/logs`, and the per-process seed `run.seed + rank`."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed

    output_dir = Path(require(cfg, "run.output_dir")).expanduser()
    precision = str(cfg.run.mixed_precision)
    if precision not in PRECISIONS:
        raise ConfigError(f"run.mixed_precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and not torch.cuda.is_available():
        LOG.warning("run.mixed_precision=fp16 needs a CUDA GPU; training in fp32 on this machine")
        precision = "no"
    tracker = tracker_name(cfg)
    keep = cfg.ckpt.get("keep_states")
    # States go to <output_dir>/state/checkpoints/checkpoint_<step> (accelerate's automatic naming; we set the
    # iteration to the step before each save); `total_limit` deletes the oldest.
    project = ProjectConfiguration(project_dir=str(output_dir / STATE_DIR), logging_dir=str(output_dir / "logs"),
                                   automatic_checkpoint_naming=True,
                                   total_limit=int(keep) if keep not in (None, 0) else None,
                                   save_on_each_node=bool(cfg.ckpt.get("save_on_each_node", False)))
    # Several processes without CUDA (`accelerate launch --multi_gpu --num_processes N` on a CPU machine): DDP over
    # gloo on the CPU; accelerate only picks that backend when asked for the CPU.
    cpu_ddp = not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1
    accelerator = Accelerator(mixed_precision=precision,
                              gradient_accumulation_steps=int(cfg.run.gradient_accumulation_steps),
                              log_with=None if tracker == "none" else tracker, project_config=project, cpu=cpu_ddp,
                              kwargs_handlers=[process_group_kwargs(cfg)])
    set_seed(int(cfg.run.seed) + accelerator.process_index)
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s")
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, output_dir / "config.yaml")
    if tracker == "tensorboard":
        accelerator.init_trackers("tensorboard")  # <output_dir>/logs/tensorboard
    elif tracker == "wandb":
        accelerator.init_trackers(str(cfg.run.get("tracker_project") or "latentsync"),
                                  config=OmegaConf.to_container(cfg, resolve=True))
    accelerator.wait_for_everyone()
    return accelerator, output_dir


def process_group_kwargs(cfg: DictConfig):
    """`run.process_group_timeout_s` as accelerate's `InitProcessGroupKwargs`: how long a collective (the barrier
    after the main process's validation and export) waits before the run fails."""
    from datetime import timedelta

    from accelerate.utils import InitProcessGroupKwargs

    seconds = float(cfg.run.get("process_group_timeout_s") or 1800)
    if seconds <= 0:
        raise ConfigError(f"run.process_group_timeout_s must be positive, got {seconds}")
    return InitProcessGroupKwargs(timeout=timedelta(seconds=seconds))


def tracker_name(cfg: DictConfig) -> str:
    """`run.log_with`: tensorboard (default), wandb (Weights & Biases, `pip install wandb`; `wandb login` or
    WANDB_MODE=offline) or none (metrics.jsonl only)."""
    name = str(cfg.run.get("log_with", "tensorboard") or "none").lower()
    if name not in TRACKERS:
        raise ConfigError(f"run.log_with must be one of {sorted(TRACKERS)}, got {name!r}")
    if name == "wandb":
        import importlib.util

        if importlib.util.find_spec("wandb") is None:
            raise ConfigError("run.log_with=wandb needs the wandb package: pip install wandb "
                              "(or run.log_with=tensorboard)")
    return name


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


STATE_NAME = re.compile(r"checkpoint_(\d+)")


def states_folder(output_dir: Path) -> Path:
    """Where accelerate's automatic naming puts the states (`<project_dir>/checkpoints`)."""
    return output_dir / STATE_DIR / "checkpoints"


def _state_step(path: Path) -> int | None:
    m = STATE_NAME.fullmatch(path.name)
    return int(m.group(1)) if m and path.is_dir() else None


def _newest_state(output_dir: Path) -> Path | None:
    found = [(step, p) for p in states_folder(output_dir).glob("checkpoint_*") if (step := _state_step(p)) is not None]
    return max(found)[1] if found else None


def resume_state(accelerator, cfg: DictConfig, output_dir: Path) -> int:
    """`ckpt.resume`: "auto" = the newest state under `<output_dir>/state/checkpoints` if any, a state folder, or
    null. The main process chooses and broadcasts its choice, so nodes that do not share a file system agree on the
    step (each loads its own copy, written there with `ckpt.save_on_each_node=true`). Loads model, optimizer, LR
    schedule, EMA and RNG states with `accelerator.load_state`; returns the step to continue from."""
    from accelerate.utils import broadcast_object_list

    choice = cfg.ckpt.get("resume", "auto")
    if choice in (None, "", "none", False):
        return 0
    chosen: list = [None]
    if accelerator.is_main_process:
        if choice == "auto":
            path = _newest_state(output_dir)
        else:
            path = Path(str(choice)).expanduser()
            if _state_step(path) is None:
                raise FileNotFoundError(f"ckpt.resume={path} is not a saved training state (a folder "
                                        f"{states_folder(Path('OUTPUT_DIR'))}/checkpoint_<step>)")
        chosen = [None if path is None else (str(path) if choice != "auto" else path.name)]
    broadcast_object_list(chosen, from_process=0)
    if chosen[0] is None:
        return 0
    path = Path(chosen[0]) if choice != "auto" else states_folder(output_dir) / chosen[0]
    if not path.is_dir():
        raise FileNotFoundError(
            f"process {accelerator.process_index}: the main process resumes from {chosen[0]}, but {path} is not on "
            f"this machine. Nodes without a shared file system need their own copies: ckpt.save_on_each_node=true "
            f"(or ckpt.resume=null to start over)")
    accelerator.load_state(str(path))
    step = _state_step(path)
    LOG.info("resumed from %s at step %d", path, step)
    return step


def save_state(accelerator, step: int) -> None:
    """`accelerator.save_state` into `<output_dir>/state/checkpoints/checkpoint_<step>`; accelerate deletes the
    oldest beyond `ckpt.keep_states`."""
    accelerator.project_configuration.iteration = step  # automatic naming: checkpoint_<iteration>
    accelerator.save_state()
    accelerator.wait_for_everyone()


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
    """DataLoader over this process's share of the global sample ids (see StepSampler); a resumed run skips the
    micro-batches already trained with accelerate's `skip_first_batches` (only sample ids are skipped, no data is
    read)."""
    from accelerate import skip_first_batches

    from .data.sampler import StepSampler

    sampler = StepSampler(int(cfg.data.batch_size), accelerator.process_index, accelerator.num_processes,
                          repeat_first=bool(cfg.data.get("overfit_one_batch", False)))
    workers = int(cfg.data.num_workers)
    loader = torch.utils.data.DataLoader(dataset, batch_size=int(cfg.data.batch_size), sampler=sampler,
                                         num_workers=workers, persistent_workers=workers > 0,
                                         pin_memory=torch.cuda.is_available())
    micro_batches = start_step * int(cfg.run.gradient_accumulation_steps)
    return skip_first_batches(loader, micro_batches) if micro_batches else loader


def make_optimizer(cfg: DictConfig, params: list, num_processes: int):
    """AdamW over `params` (lr x processes with `optimizer.scale_lr`; bitsandbytes' 8-bit AdamW with
    `optimizer.use_8bit_adam`) and a factory for the diffusers LR schedule (built on the prepared optimizer; stepped
    once per optimizer step)."""
    from diffusers.optimization import get_scheduler

    opt = cfg.optimizer
    lr = float(opt.lr) * (num_processes if opt.get("scale_lr") else 1)
    adamw = torch.optim.AdamW
    if opt.get("use_8bit_adam", False):
        try:
            import bitsandbytes
        except ImportError:
            raise ConfigError("optimizer.use_8bit_adam=true needs bitsandbytes (pip install bitsandbytes; a CUDA "
                              "GPU), or optimizer.use_8bit_adam=false") from None
        adamw = bitsandbytes.optim.AdamW8bit
    optimizer = adamw(params, lr=lr, weight_decay=float(opt.get("weight_decay", 0.01)))
    return optimizer, lambda o: get_scheduler(str(opt.lr_scheduler), optimizer=o,
                                             num_warmup_steps=int(opt.lr_warmup_steps),
                                             num_training_steps=int(cfg.run.max_train_steps))


def shards_weights(accelerator) -> bool:
    """FSDP or DeepSpeed ZeRO-3: no process holds the whole model between collectives."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    return accelerator.distributed_type == DistributedType.DEEPSPEED and plugin is not None and plugin.zero_stage == 3


def make_ema(cfg: DictConfig, accelerator, model):
    """diffusers' `EMAModel` over the trained parameters with `run.use_ema` (decay `run.ema_decay`), else None.
    Checkpoints and validation then use the averaged weights; the state saves it."""
    if not cfg.run.get("use_ema", False):
        return None
    if shards_weights(accelerator):
        raise ConfigError("run.use_ema=true keeps a full copy of the trained weights per process; it does not work "
                          "with FSDP or DeepSpeed ZeRO-3 sharding (use DDP, or run.use_ema=false)")
    from diffusers.training_utils import EMAModel

    return EMAModel([p for p in model.parameters() if p.requires_grad], decay=float(cfg.run.get("ema_decay", 0.9999)))


def prepare_and_resume(accelerator, cfg: DictConfig, output_dir: Path, model, optimizer, make_lr):
    """accelerator.prepare(model, optimizer), the LR schedule and the optional EMA (registered for checkpointing,
    so `save_state` / `load_state` carry them), and the resumed step (0 for a fresh run)."""
    model, optimizer = accelerator.prepare(model, optimizer)
    lr_scheduler = make_lr(optimizer)
    accelerator.register_for_checkpointing(lr_scheduler)
    ema = make_ema(cfg, accelerator, model)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    step = resume_state(accelerator, cfg, output_dir)
    # accelerate counts micro-batches for `accumulate`; each of our optimizer steps runs exactly
    # run.gradient_accumulation_steps of them, so the count restarts at a step boundary (also when a run resumes with
    # another accumulation).
    accelerator.step = 0
    return model, optimizer, lr_scheduler, ema, step


@contextlib.contextmanager
def exported_weights(ema, model):
    """The weights checkpoints and validation see: the EMA average when there is one, else the trained ones."""
    if ema is None:
        yield
        return
    params = [p for p in model.parameters() if p.requires_grad]
    ema.store(params)
    ema.copy_to(params)
    try:
        yield
    finally:
        ema.restore(params)


def train_loop(cfg: DictConfig, accelerator, output_dir: Path, model, optimizer, lr_scheduler, dataset,
               step: int, losses_of, export, validate=None, ema=None) -> None:
    """Optimizer steps until `run.max_train_steps`, each over `run.gradient_accumulation_steps` micro-batches
    (`accelerator.accumulate`: gradients are synchronised and the optimizer steps on the last one).

    `losses_of(batch, generator) -> {"loss": total, name: part, ...}`; `export(state_dict, model, step) -> folder`
    writes a checkpoint on the main process from the full state dict that every process gathers together
    (`accelerator.get_state_dict`: also under FSDP / DeepSpeed); `validate(model, step) -> {name: value}` runs on
    the main process every `validation.every` steps (the others wait up to `run.process_group_timeout_s`).
    Exported checkpoints are rotated (`ckpt.keep_checkpoints`, `ckpt.keep_best`). With `data.overfit_one_batch` the
    same batch, noise and timesteps are used every step.
    """
    from .checkpoint_rotation import record_validation, rotate_checkpoints

    max_steps, accum = int(cfg.run.max_train_steps), int(cfg.run.gradient_accumulation_steps)
    metrics = Metrics(accelerator, output_dir)
    progress = Progress(accelerator, step, max_steps)
    loader = iter(make_loader(dataset, cfg, accelerator, step))
    params = [p for p in model.parameters() if p.requires_grad]
    seed, rank = int(cfg.run.seed), accelerator.process_index
    overfit = bool(cfg.data.get("overfit_one_batch", False))
    every = int(cfg.validation.get("every", 0) or 0) if validate is not None else 0
    if every and shards_weights(accelerator):
        raise ConfigError("validation runs our pipeline on the main process with the whole model, which FSDP / "
                          "DeepSpeed ZeRO-3 shard across processes: set validation.every=0 and score the exported "
                          "checkpoints instead")
    max_grad_norm = float(cfg.optimizer.max_grad_norm)
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
            with accelerator.accumulate(model):
                losses = losses_of(batch, generator)
                checks.after_losses(losses, batch, step + 1)
                accelerator.backward(losses["loss"])  # divided by the accumulation steps by accelerate
                if accelerator.sync_gradients and max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, max_grad_norm)
                optimizer.step()  # a no-op until the last micro-batch
                optimizer.zero_grad(set_to_none=True)
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + reduce_mean(accelerator, v) / accum
        if not accelerator.sync_gradients:
            raise RuntimeError("gradient accumulation out of step with accelerate's counter")
        lr_scheduler.step()
        if ema is not None:
            ema.step(params)
        step += 1
        metrics.samples_seen(step, seen_ids, seen_clips)
        metrics.log(step, {**{k if k == "loss" else f"loss/{k}": v for k, v in totals.items()},
                           "lr": lr_scheduler.get_last_lr()[0], "time/step_s": time.perf_counter() - started,
                           **checks.step_metrics()})
        progress.update(loss=totals["loss"])
        last = step == max_steps
        exporting = step % int(cfg.ckpt.save_ckpt_steps) == 0 or last
        validating = bool(every) and (step % every == 0 or last)
        folder, values = None, None
        with exported_weights(ema if exporting or validating else None, model):
            if exporting:
                state = accelerator.get_state_dict(model)  # a collective under FSDP / DeepSpeed: every process
                if accelerator.is_main_process:
                    folder = export(state, accelerator.unwrap_model(model), step)
                del state
            if validating:
                if accelerator.is_main_process:
                    values = validate(accelerator.unwrap_model(model), step)
                    metrics.log(step, values)
                accelerator.wait_for_everyone()
        if accelerator.is_main_process and folder is not None:
            if values:
                record_validation(folder, values)
            rotate_checkpoints(output_dir / CHECKPOINT_DIR, cfg.ckpt.get("keep_checkpoints"),
                               cfg.ckpt.get("best_metric") if cfg.ckpt.get("keep_best", False) else None,
                               str(cfg.ckpt.get("best_mode", "max")))
        if step % int(cfg.ckpt.save_state_steps) == 0 or last:
            save_state(accelerator, step)
    progress.close()
    accelerator.end_training()
