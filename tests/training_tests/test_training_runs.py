"""`accelerate launch --multi_gpu --num_processes 2` (two CPU processes, DDP over gloo) of train_syncnet and of
train_unet stages 1 and 2 with the smoke configs, on the clips prepared by prepare_data: the loss falls when
overfitting one batch, a run resumed from the step-2 state reproduces the uninterrupted run's step 3, the two processes
see different samples (that the sample order itself resumes is tested in test_training_configs), and the stage-2 checkpoint runs in the node pack on the real ComfyUI server."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

import comfy_session as cs
from latentsync.models.checkpoint import load_unet
from latentsync.models.stable_syncnet import load_stable_syncnet
from training_tests.helpers import accelerate_launch, losses, read_jsonl

pytestmark = pytest.mark.slow
STEPS = 3
LAST = f"step-{STEPS:07d}"


def samples(output: Path) -> dict[int, list[dict]]:
    return {rank: read_jsonl(output / "logs" / f"samples-rank{rank}.jsonl") for rank in (0, 1)}


def states(output: Path) -> list[str]:
    return sorted(p.name for p in (output / "state" / "checkpoints").iterdir())


def resume_from(first: Path, second: Path, step: int) -> None:
    """Start `second` from `first`'s saved state at `step` (as an interrupted run would find it)."""
    state = Path("state") / "checkpoints" / f"checkpoint_{step}"
    shutil.copytree(first / state, second / state)


def assert_same_losses(resumed: Path, reference: Path, steps) -> None:
    got, want = losses(resumed), losses(reference)
    assert min(got) == steps[0], f"the resumed run did not continue at step {steps[0]}: {got}"
    for s in steps:
        assert got[s] == pytest.approx(want[s], rel=1e-5, abs=1e-6), (s, got, want)


def assert_ranks_disjoint(output: Path) -> None:
    seen = samples(output)
    ids = [{i for row in seen[r] for i in row["sample_ids"]} for r in (0, 1)]
    clips = [{c for row in seen[r] for c in row["clips"]} for r in (0, 1)]
    assert ids[0] and ids[1] and not ids[0] & ids[1], ids
    assert clips[0] != clips[1], clips
    assert len(seen[0]) == len(seen[1]) == STEPS


# ---------------------------------------------------------------------------------------------------------- SyncNet

def test_syncnet_overfits_one_batch_resumes_exactly_and_writes_a_loadable_checkpoint(training_data, tmp_path):
    first, resumed = tmp_path / "first", tmp_path / "resumed"
    accelerate_launch("training.train_syncnet", "smoke_syncnet", first, training_data, "data.overfit_one_batch=true")
    loss = losses(first)
    assert sorted(loss) == list(range(1, STEPS + 1)) and loss[STEPS] < loss[1], loss
    assert_ranks_disjoint(first)
    resume_from(first, resumed, 2)
    accelerate_launch("training.train_syncnet", "smoke_syncnet", resumed, training_data, "data.overfit_one_batch=true",
                      "validation.every=0")
    assert_same_losses(resumed, first, [3])
    for rank, rows in samples(resumed).items():
        assert rows == samples(first)[rank][2:]

    folder = first / "checkpoints" / LAST
    raw = torch.load(folder / "stable_syncnet.pt", weights_only=True)
    assert raw["global_step"] == STEPS
    config = yaml.safe_load((folder / "syncnet_config.yaml").read_text())["model"]
    net = load_stable_syncnet(folder / "stable_syncnet.pt", config)
    assert net.visual_encoder.conv_in.in_channels == 48
    val = [r for r in read_jsonl(first / "logs" / "metrics.jsonl") if "val/accuracy" in r]
    assert val and 0.0 <= val[-1]["val/accuracy"] <= 1.0


# ---------------------------------------------------------------------------------------------------------- U-Net

# stage 2 accumulates 2 micro-batches per step (accelerator.accumulate), keeps an EMA of its weights, and saves a
# state every step, of which accelerate keeps 2 (ProjectConfiguration.total_limit)
STAGE2 = ["run.gradient_accumulation_steps=2", "ckpt.save_state_steps=1", "ckpt.keep_states=2", "run.use_ema=true"]


@pytest.fixture(scope="module")
def stage_runs(training_data, training_models, tmp_path_factory):
    """Per stage, an overfitting run on the session's tiny model set; for stage 2 also a run resumed from its step-2
    state that builds its own tiny set as the smoke config ships (`models.tiny_seed: 0`, the same weights). Stage 1
    shares stage 2's script and loop, so its resume is not launched again."""
    runs = {}

    def run(stage: str) -> dict:
        if stage not in runs:
            base = tmp_path_factory.mktemp(stage)
            first, second = base / "first", base / "resumed"
            extra = STAGE2 if stage == "stage2" else []
            accelerate_launch("training.train_unet", f"smoke_{stage}", first, training_data,
                              "data.overfit_one_batch=true", "models.tiny_seed=null", f"models.dir={training_models}",
                              *extra)
            runs[stage] = {"first": first}
            if stage == "stage2":
                runs[stage]["states"] = states(first)
                resume_from(first, second, 2)
                accelerate_launch("training.train_unet", f"smoke_{stage}", second, training_data,
                                  "data.overfit_one_batch=true", "validation.every=0", *extra)
                runs[stage]["resumed"] = second
        return runs[stage]

    return run


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_unet_overfits_one_batch(stage_runs, stage):
    run = stage_runs(stage)
    loss = losses(run["first"])
    assert sorted(loss) == list(range(1, STEPS + 1)) and loss[STEPS] < loss[1], loss
    assert_ranks_disjoint(run["first"])
    metrics = read_jsonl(run["first"] / "logs" / "metrics.jsonl")
    parts = {"stage1": {"loss/recon"}, "stage2": {"loss/recon", "loss/sync", "loss/lpips", "loss/trepa"}}[stage]
    assert parts <= set(metrics[0]), metrics[0]
    assert list((run["first"] / "logs" / "tensorboard").glob("events.out.tfevents.*"))


def test_stage2_accumulates_keeps_two_states_and_resumes_with_the_same_next_step_loss(stage_runs):
    run = stage_runs("stage2")
    assert run["states"] == ["checkpoint_2", "checkpoint_3"]  # states of steps 1..3, total_limit 2
    state = run["first"] / "state" / "checkpoints" / "checkpoint_3"
    assert {"custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl"} <= {p.name for p in state.iterdir()}  # LR, EMA
    for rank, rows in samples(run["first"]).items():
        assert [len(r["sample_ids"]) for r in rows] == [2] * STEPS  # 2 micro-batches of 1 per step
    assert_same_losses(run["resumed"], run["first"], [3])
    assert states(run["resumed"]) == ["checkpoint_2", "checkpoint_3"]
    for rank, rows in samples(run["resumed"]).items():
        assert rows == samples(run["first"])[rank][2:]
    assert (run["resumed"] / "tiny_models" / "TINY_MODEL_SET.txt").is_file()  # built at start, as shipped


def test_stage1_validation_runs_the_pipeline_and_scores_sync(stage_runs):
    first = stage_runs("stage1")["first"]
    val = [r for r in read_jsonl(first / "logs" / "metrics.jsonl") if "val/faces_found" in r]
    assert len(val) == 1 and val[0]["step"] == STEPS
    assert val[0]["val/faces_found"] == 1.0
    assert {"val/sync_confidence", "val/sync_offset_frames"} <= set(val[0])
    recorded = json.loads((first / "checkpoints" / LAST / "validation.json").read_text())  # for the rotation
    assert recorded["val/sync_confidence"] == val[0]["val/sync_confidence"]
    video = first / "validation" / f"{LAST}.mp4"
    assert video.is_file() and cs.probe(video)["frames"] > 0


def test_stage2_checkpoint_loads_in_the_node_pack_and_runs_the_one_node_workflow(stage_runs, comfy_server):
    folder = stage_runs("stage2")["first"] / "checkpoints" / LAST
    checkpoint = folder / "latentsync_unet-v1.5.pt"
    raw = torch.load(checkpoint, weights_only=True)
    assert set(raw) == {"global_step", "state_dict"} and raw["global_step"] == STEPS
    unet = load_unet(checkpoint)  # architecture read from the file, as a file without its yaml would be
    assert unet.config["use_motion_module"]

    target = comfy_server.base / "models" / "latentsync" / "trained_smoke"
    shutil.copytree(folder, target, dirs_exist_ok=True)
    try:
        name = "trained_smoke/latentsync_unet-v1.5.pt"
        overrides = {**cs.TEST_OVERRIDES, ("LatentSyncModelLoader", "checkpoint"): name}
        prompt = cs.adapt_api(cs.load_json(cs.REPO / "workflows" / "api" / "latentsync_video.json"), overrides)
        loaders = [n for n in prompt.values() if n["class_type"] == "LatentSyncModelLoader"]
        assert len(loaders) == 1 and loaders[0]["inputs"]["checkpoint"] == name
        entry, seconds = comfy_server.run(prompt, timeout=900)
        cs.assert_success(entry, comfy_server)
        cs.record_timing("api_trained_checkpoint_s", round(seconds, 1))
        videos = cs.saved_videos(entry, prompt, comfy_server)
        assert len(videos) == 1 and cs.probe(videos[0])["frames"] == cs.EXPECTED_FRAMES
        assert str(target / "latentsync_unet-v1.5.pt") in comfy_server.log.read_text(errors="replace")
    finally:
        shutil.rmtree(target)  # the folder this test added; the server's other models stay as they were
