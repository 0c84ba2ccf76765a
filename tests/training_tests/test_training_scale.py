"""What the scale and disk options of the training configs do, in-process: the process-group timeout handed to
accelerate, the tracker and 8-bit AdamW choices (clear errors when their package is missing), the EMA weights that
checkpoints and validation see, and which exported checkpoints the rotation keeps."""
from __future__ import annotations

import importlib.util
import json
from datetime import timedelta

import pytest
import torch

from training.checkpoint_rotation import VALIDATION_FILE, checkpoints_to_keep, record_validation, rotate_checkpoints
from training.config import ConfigError, load_config
from training.runtime import exported_weights, make_optimizer, process_group_kwargs, tracker_name


def test_process_group_timeout_comes_from_the_config():
    cfg = load_config("stage2", ["output_dir=/o", "run.process_group_timeout_s=5400"])
    assert process_group_kwargs(cfg).to_kwargs() == {"timeout": timedelta(seconds=5400)}
    assert process_group_kwargs(load_config("smoke_syncnet", ["output_dir=/o"])).timeout == timedelta(seconds=1800)
    with pytest.raises(ConfigError, match="process_group_timeout_s"):
        process_group_kwargs(load_config("stage2", ["output_dir=/o", "run.process_group_timeout_s=-1"]))


def test_tracker_and_8bit_adam_choices():
    assert tracker_name(load_config("stage2", ["output_dir=/o"])) == "tensorboard"
    assert tracker_name(load_config("stage2", ["output_dir=/o", "run.log_with=none"])) == "none"
    with pytest.raises(ConfigError, match="run.log_with must be one of"):
        tracker_name(load_config("stage2", ["output_dir=/o", "run.log_with=mlflow"]))
    if importlib.util.find_spec("wandb") is None:
        with pytest.raises(ConfigError, match="pip install wandb"):
            tracker_name(load_config("stage2", ["output_dir=/o", "run.log_with=wandb"]))
    params = [torch.nn.Parameter(torch.zeros(3))]
    cfg = load_config("stage2", ["output_dir=/o", "optimizer.use_8bit_adam=true"])
    if importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(ConfigError, match="pip install bitsandbytes"):
            make_optimizer(cfg, params, 1)
    else:
        assert type(make_optimizer(cfg, params, 1)[0]).__name__ == "AdamW8bit"
    assert isinstance(make_optimizer(load_config("stage2", ["output_dir=/o"]), params, 1)[0], torch.optim.AdamW)


def test_checkpoints_and_validation_see_the_ema_weights_and_training_continues_on_its_own():
    from diffusers.training_utils import EMAModel

    model = torch.nn.Linear(2, 2)
    frozen = model.bias.requires_grad_(False)
    ema = EMAModel([model.weight], decay=0.5)
    ema.step([model.weight])  # diffusers' first update copies the weights
    trained = torch.ones(2, 2)
    with torch.no_grad():
        model.weight.copy_(trained)
    ema.step([model.weight])
    with exported_weights(ema, model):
        assert torch.equal(model.weight, ema.shadow_params[0]) and not torch.equal(model.weight, trained)
        assert model.bias is frozen
    assert torch.equal(model.weight, trained)
    with exported_weights(None, model):
        assert torch.equal(model.weight, trained)


def test_rotation_keeps_the_newest_and_the_best_validated(tmp_path):
    scores = {1: 2.5, 2: 6.0, 3: None, 4: 3.0, 5: None}
    for step, score in scores.items():
        folder = tmp_path / f"step-{step:07d}"
        folder.mkdir()
        (folder / "latentsync_unet-v1.5.pt").write_bytes(b"x")
        if score is not None:
            record_validation(folder, {"val/sync_confidence": score, "val/faces_found": 1.0})
    assert json.loads((tmp_path / "step-0000002" / VALIDATION_FILE).read_text())["val/sync_confidence"] == 6.0
    kept, best = checkpoints_to_keep(tmp_path, 2, "val/sync_confidence")
    assert [p.name for p in kept] == ["step-0000002", "step-0000004", "step-0000005"] and best.name == "step-0000002"
    kept, best = checkpoints_to_keep(tmp_path, 1, "val/sync_confidence", "min")
    assert [p.name for p in kept] == ["step-0000001", "step-0000005"]
    rotate_checkpoints(tmp_path, None, None)  # nothing asked: everything stays
    assert len(list(tmp_path.iterdir())) == 5
    (tmp_path / "notes").mkdir()  # not ours: never touched
    rotate_checkpoints(tmp_path, 2, "val/sync_confidence")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes", "step-0000002", "step-0000004", "step-0000005"]
    with pytest.raises(ValueError, match="keep_checkpoints must be at least 1"):
        rotate_checkpoints(tmp_path, 0, None)


class _Process:
    """The parts of an Accelerator that `resume_state` uses, for one process of a run."""

    def __init__(self, index: int):
        self.process_index, self.is_main_process, self.loaded = index, index == 0, None

    def load_state(self, path: str) -> None:
        self.loaded = path


def test_every_process_resumes_from_the_state_the_main_process_chose(tmp_path, monkeypatch):
    """Nodes without a shared file system: the main process picks the newest state of its disk and broadcasts it; a
    node whose own disk holds other states loads the chosen one, and a node without it stops saying why."""
    import accelerate.utils

    from training import runtime

    cfg = load_config("stage2", ["output_dir=/o"])
    main_dir, node_dir, bare_dir = tmp_path / "main", tmp_path / "node", tmp_path / "bare"
    for folder, steps in ((main_dir, (3, 5)), (node_dir, (5, 7)), (bare_dir, (3,))):
        for step in steps:
            (runtime.states_folder(folder) / f"checkpoint_{step}").mkdir(parents=True)
    sent = []

    def broadcast(objects, from_process=0):
        if sent:
            objects[:] = sent
        else:
            sent.extend(objects)
        return objects

    monkeypatch.setattr(accelerate.utils, "broadcast_object_list", broadcast)
    main = _Process(0)
    assert runtime.resume_state(main, cfg, main_dir) == 5
    node = _Process(1)
    assert runtime.resume_state(node, cfg, node_dir) == 5  # not its own newest (7)
    assert node.loaded == str(runtime.states_folder(node_dir) / "checkpoint_5")
    with pytest.raises(FileNotFoundError, match="ckpt.save_on_each_node=true"):
        runtime.resume_state(_Process(2), cfg, bare_dir)
