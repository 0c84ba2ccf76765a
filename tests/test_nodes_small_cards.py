"""Small GPUs inside ComfyUI, in-process on ComfyUI 0.3.75's own modules: the U-Net built from `comfy.ops` keeps
the official keys and passes the U-Net and loop parity fixtures (the loop with sequential guidance and chunked
feed-forwards), runs when ComfyUI loads it partially (weights streamed per layer), is loaded once per run, and the
nodes' new inputs are optional and last."""
from __future__ import annotations

import pytest
import torch

from conftest import shared_path
from test_nodes_inprocess import RT, N, T, folder_paths  # sets up ComfyUI's modules first

import comfy.model_management as mm  # noqa: E402 - after ComfyUI's path is set up
import comfy.ops  # noqa: E402

from latentsync.parity import loop as loop_parity  # noqa: E402
from latentsync.parity import unet as unet_parity  # noqa: E402

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model(tiny_model_set):
    folder_paths.add_model_folder_path("latentsync", str(tiny_model_set / "latentsync"), is_default=True)
    return N["LatentSyncModelLoader"].execute("v1.5/latentsync_unet.pt", "auto", "fp32", False).result[0]


def _weight_holders(module: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]


def test_comfy_ops_unet_keeps_official_keys_and_passes_golden_tiny():
    ops = RT.comfy_layers(torch.float32, CPU)
    assert issubclass(ops, comfy.ops.disable_weight_init)
    results = unet_parity.check(shared_path("golden", "golden_tiny.pt"), ops=ops)
    assert {"output", "case_cfg.output", "intermediates.mid_block"} <= {r.name for r in results}
    bad = [r.line() for r in results if not r.ok]
    assert not bad, bad


def test_comfy_ops_unet_with_sequential_guidance_and_chunks_passes_golden_loop():
    """The hardest run of the fixture (guidance + DeepCache), guidance as two sequential halves and every
    feed-forward in 3 pieces, on the comfy.ops U-Net: final latents, the whole trajectory, the first U-Net outputs
    and which steps ran the whole network, at the fixture's fp32 tolerances."""
    results = loop_parity.check(shared_path("golden", "golden_loop.pt"), runs=["deepcache"],
                                ops=RT.comfy_layers(torch.float32, CPU), cfg_batch="sequential", ff_chunks=3)
    assert {"deepcache.final", "deepcache.trajectory", "deepcache.full_network_steps"} <= {r.name for r in results}
    bad = [r.line() for r in results if not r.ok]
    assert not bad, bad


def test_loaded_unet_is_comfy_ops_and_runs_when_loaded_partially(model):
    """Every weight-holding layer is a comfy.ops layer, so a partial load (small GPU, --lowvram) leaves weights
    on the offload device and casts them per call; the output is the same as fully loaded."""
    unet = model.unet
    holders = _weight_holders(unet)
    assert holders and all(isinstance(m, comfy.ops.CastWeightBiasOp) for m in holders), \
        [type(m).__name__ for m in holders if not isinstance(m, comfy.ops.CastWeightBiasOp)]
    g = torch.Generator().manual_seed(0)
    cross = unet.config["cross_attention_dim"]
    sample = torch.randn(2, 13, 4, 8, 8, generator=g)
    audio = torch.randn(2, 4, 50, cross, generator=g)
    patcher = model.patcher
    mm.free_memory(1e30, CPU)
    with torch.no_grad():
        whole = unet(sample, torch.tensor(501), audio)
        try:
            patcher.load(CPU, lowvram_model_memory=1)  # as ComfyUI does when the GPU holds almost nothing
            streamed = [m for m in holders if m.comfy_cast_weights]
            assert len(streamed) > len(holders) // 2 and patcher.model.model_lowvram
            split = unet(sample, torch.tensor(501), audio)
        finally:
            patcher.unpatch_model(device_to=patcher.offload_device)
    assert not any(m.comfy_cast_weights for m in holders)
    assert torch.equal(split, whole)


def test_sampler_loads_the_unet_once_per_run_and_its_options_give_the_same_latents(model, monkeypatch):
    """Two windows (16 + 2 frames) load the U-Net once; sequential guidance with chunked feed-forwards gives the
    joint run's latents within fp32 rounding; the estimate given to ComfyUI follows the options."""
    n, lat = 18, model.resolution // 8
    g = torch.Generator().manual_seed(3)
    encoded = T.EncodedFaces(
        index=torch.arange(n), masked_image_latents=torch.randn(n, 4, lat, lat, generator=g),
        ref_latents=torch.randn(n, 4, lat, lat, generator=g),
        mask_latents=(torch.rand(n, 1, lat, lat, generator=g) > 0.5).float(),
        faces=torch.zeros(n, 8, 8, 3, dtype=torch.uint8), pixel_mask=torch.ones(8, 8), num_frames=n,
        resolution=model.resolution)
    audio = T.AudioFeatures(torch.randn(n, 50, model.unet.config["cross_attention_dim"], generator=g), fps=25)
    loads = []
    real_load = RT.load_to_device
    monkeypatch.setattr(RT, "load_to_device", lambda *a, **k: loads.append(k) or real_load(*a, **k))
    sampler = N["LatentSyncSampler"].execute
    mm.free_memory(1e30, CPU)
    joint = sampler(model, encoded, audio, 5, 1, 1.5, True, 3).result[0]["samples"]
    assert loads == [{"full": False}]  # once, and split-capable
    sequential = sampler(model, encoded, audio, 5, 1, 1.5, True, 3, cfg_batch="sequential",
                         ff_chunks=2).result[0]["samples"]
    assert len(loads) == 1  # still held by ComfyUI: not loaded again
    assert (sequential - joint).abs().max() <= 1e-4 * joint.abs().max()
    assert RT.unet_memory_estimate(512, 16, torch.float16, "sequential") < \
        0.6 * RT.unet_memory_estimate(512, 16, torch.float16, "joint")


@pytest.mark.parametrize("node_id", ["LatentSyncSampler", "LatentSyncLipSyncVideo", "LatentSyncLipSyncImages"])
def test_small_card_inputs_are_optional_and_last(node_id):
    schema = N[node_id].GET_SCHEMA()
    last = schema.inputs[-3:]
    assert [i.id for i in last] == ["cfg_batch", "ff_chunks", "compile"]
    assert all(i.optional for i in last) and [i.default for i in last] == ["joint", 1, False]
    assert all(i.tooltip for i in last)
