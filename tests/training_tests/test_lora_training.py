"""`accelerate launch --multi_gpu --num_processes 2` of a LoRA fine-tune (`smoke_lora`: rank-4 adapters on the tiny
set's released U-Net): the checkpoint is the adapter alone, a small file that the U-Net loader of the nodes and the
command line (`load_unet(..., loras=...)`) merges: strength 1 changes the output, strength 0 is the base exactly."""
from __future__ import annotations

import pytest
import torch

from latentsync import hub
from latentsync.models.checkpoint import load_unet
from latentsync.models.lora import load_lora
from training.lora import LORA_FILE
from training_tests.helpers import accelerate_launch, losses

pytestmark = pytest.mark.slow


def test_lora_run_writes_a_small_adapter_that_the_loader_applies(training_data, training_models, tmp_path):
    out = tmp_path / "lora"
    accelerate_launch("training.train_unet", "smoke_lora", out, training_data, "models.tiny_seed=null",
                      f"models.dir={training_models}", "validation.every=0")
    assert sorted(losses(out)) == [1, 2]
    folder = out / "checkpoints" / "step-0000002"
    assert sorted(p.name for p in folder.iterdir()) == [LORA_FILE]  # no full U-Net
    base_file = training_models / "latentsync" / "v1.5" / "latentsync_unet.pt"
    lora_file = folder / LORA_FILE
    assert lora_file.stat().st_size < base_file.stat().st_size / 10
    lora = load_lora(lora_file)
    assert (lora.rank, lora.alpha, len(lora.factors), lora.num_parameters()) == (4, 4.0, 176, 73_216)
    # trained away from peft's zero-initialised B (the value paths always get a gradient; the query / key of a
    # self-attention over a single 1 x 1 token at the deepest level do not)
    assert all(b.abs().max() > 0 for m, (_, b) in lora.factors.items() if m.endswith(("to_v", "to_out.0")))

    config = hub.read_unet_config(base_file.with_name(hub.UNET_CONFIG_NAME))
    g = torch.Generator().manual_seed(0)
    sample, audio = torch.randn(1, 13, 2, 8, 8, generator=g), torch.randn(1, 2, 50, 384, generator=g)

    def output(strength: float | None) -> torch.Tensor:
        loras = [] if strength is None else [(lora_file, strength)]
        with torch.no_grad():
            return load_unet(base_file, config=config, loras=loras)(sample, torch.tensor(301), audio)

    base = output(None)
    assert torch.equal(output(0.0), base)
    assert (output(1.0) - base).abs().max() > 1e-4
