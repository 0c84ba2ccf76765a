"""The U-Net's run-time choices: the GroupNorm precision rule, other layer classes (`ops`), feed-forward chunking,
sequential classifier-free guidance, `torch.compile` of its blocks, and the activation-memory estimate against the
traced peaks. (The `comfy.ops` build and the loop fixture with these options: tests/test_nodes_small_cards.py.)"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from latentsync.models import UNet3DConditionModel
from latentsync.models import layers as layers_module
from latentsync.models.activation_memory import activation_peak_bytes
from latentsync.models.attention import FeedForward
from latentsync.models.layers import group_norm_in_float32, layers
from latentsync.models.tiny import random_tiny_unet, tiny_unet_config
from latentsync.sampling import denoise_window, make_scheduler

# two levels, one layer each: every block kind (cross-attention, motion module, up/down) at a fraction of the cost
SMALL = dict(block_out_channels=[32, 32], down_block_types=["CrossAttnDownBlock3D", "DownBlock3D"],
             up_block_types=["UpBlock3D", "CrossAttnUpBlock3D"], layers_per_block=1, motion_module_resolutions=[1, 2])


@pytest.mark.parametrize("device_type,dtype,expected", [
    ("cuda", torch.float16, False), ("cuda", torch.bfloat16, False),  # the official code: norms in fp16 on CUDA
    ("cpu", torch.bfloat16, False), ("cpu", torch.float16, False),  # measured: native kernels accumulate in fp32
    ("meta", torch.float16, False),  # the memory trace behaves as CUDA
    ("mps", torch.float16, True), ("xpu", torch.bfloat16, True),  # not measured: float32 statistics kept
    ("cuda", torch.float32, False), ("mps", torch.float32, False),
])
def test_group_norm_precision_rule(device_type, dtype, expected):
    assert group_norm_in_float32(dtype, device_type) is expected


def test_group_norm_runs_in_the_model_dtype_unless_the_rule_says_float32(monkeypatch):
    g = torch.Generator().manual_seed(0)
    norm = layers().GroupNorm(32, 64).to(torch.bfloat16)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.1 * torch.randn(64, generator=g))
        norm.bias.copy_(0.1 * torch.randn(64, generator=g))
    x = (torch.randn(2, 64, 4, 8, 8, generator=g) * 3 + 5).to(torch.bfloat16)
    native = F.group_norm(x, 32, norm.weight, norm.bias, norm.eps)
    assert torch.equal(norm(x), native)
    monkeypatch.setattr(layers_module, "NATIVE_HALF_NORM_DEVICES", frozenset())  # as on an unmeasured device
    upcast = F.group_norm(x.float(), 32, norm.weight.float(), norm.bias.float(), norm.eps).to(torch.bfloat16)
    out = norm(x)
    assert out.dtype == torch.bfloat16 and torch.equal(out, upcast)
    # measured: both agree with float64 statistics to within one bf16 rounding step of the output
    ref = F.group_norm(x.double(), 32, norm.weight.double(), norm.bias.double(), norm.eps)
    step = 2.0 ** -7 * ref.abs().max()
    assert (native.double() - ref).abs().max() <= 2 * step and (upcast.double() - ref).abs().max() <= 2 * step


def test_other_layer_classes_build_the_same_state_dict():
    """A host's own layer classes (as ComfyUI's comfy.ops) are used for every weight-holding layer; the names and
    shapes of the state dict stay the official ones."""
    ops = SimpleNamespace(**{name: type(f"Host{name}", (getattr(nn, name),), {})
                             for name in ("Linear", "Conv2d", "GroupNorm", "LayerNorm")})
    config = tiny_unet_config()
    with torch.device("meta"):
        plain = UNet3DConditionModel(**config)
        hosted = UNet3DConditionModel(ops=ops, **config)
    assert {k: v.shape for k, v in hosted.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    assert list(hosted.state_dict()) == list(plain.state_dict())
    host_classes = tuple(vars(ops).values())
    holders = [m for m in hosted.modules() if any(True for _ in m.parameters(recurse=False))]
    assert holders and all(isinstance(m, host_classes) for m in holders), \
        [type(m).__name__ for m in holders if not isinstance(m, host_classes)]
    assert layers(ops) is layers(ops)  # derived classes are made once per namespace
    with pytest.raises(TypeError, match="lacks the layer classes"):
        layers(SimpleNamespace(Linear=nn.Linear))


def test_feed_forward_chunks_give_the_same_tokens():
    g = torch.Generator().manual_seed(1)
    ff = FeedForward(24)
    x = torch.randn(3, 7, 24, generator=g)
    with torch.no_grad():
        whole = ff(x)
        for chunks in (2, 5, 21, 100):  # more pieces than tokens: one token per piece
            ff.chunks = chunks
            assert torch.allclose(ff(x), whole, atol=1e-6, rtol=0)


def test_sequential_guidance_and_chunks_match_joint_and_restore_the_setting():
    """The same window with guidance as one batch of two, and as two halves (each with its own DeepCache) with the
    feed-forwards in 3 pieces (the golden loop fixture checks the same against the official numbers)."""
    g = torch.Generator().manual_seed(2)
    unet = random_tiny_unet(g, **SMALL)
    f, h = 4, 8
    inputs = [torch.randn(1, 4, f, h, h, generator=g), (torch.rand(1, 1, f, h, h, generator=g) > 0.5).float(),
              torch.randn(1, 4, f, h, h, generator=g), torch.randn(1, 4, f, h, h, generator=g),
              torch.randn(1, f, 50, 24, generator=g)]
    joint = denoise_window(unet, make_scheduler(), *inputs, num_inference_steps=3, deepcache_interval=2)
    sequential = denoise_window(unet, make_scheduler(), *inputs, num_inference_steps=3, deepcache_interval=2,
                                cfg_batch="sequential", ff_chunks=3)
    # fp32 kernels of other batch sizes round differently; the DDIM steps amplify it (x0 = eps / sqrt(alpha))
    assert (sequential - joint).abs().max() <= 5e-4 * joint.abs().max()
    assert all(m.chunks == 1 for m in unet.modules() if isinstance(m, FeedForward))  # restored after the window
    with pytest.raises(ValueError, match="unknown cfg_batch 'both'"):
        denoise_window(unet, make_scheduler(), *inputs, num_inference_steps=1, cfg_batch="both")
    with pytest.raises(ValueError, match="feed-forward chunks must be an integer >= 1"):
        denoise_window(unet, make_scheduler(), *inputs, num_inference_steps=1, ff_chunks=0)


def test_compiled_blocks_keep_deepcache_and_do_not_recompile_per_window():
    """`compile_blocks` with a counting backend (it runs the captured graphs eagerly): the same latents as the
    eager U-Net, DeepCache on; a second full-length window compiles nothing; once a short last window came
    (fewer than 8 frames: one more compile of each block shape, the frame count then symbolic), other short
    windows compile nothing either; the state-dict names are unchanged."""
    from torch._dynamo.testing import CompileCounter

    unet = random_tiny_unet(torch.Generator().manual_seed(3), **SMALL)
    keys = list(unet.state_dict())

    def window(frames: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        x, masked, ref = (torch.randn(1, 4, frames, 4, 4, generator=g) for _ in range(3))
        mask = torch.ones(1, 1, frames, 4, 4)
        audio = torch.randn(1, frames, 50, 24, generator=g)
        return denoise_window(unet, make_scheduler(), x, mask, masked, ref, audio, num_inference_steps=2,
                              deepcache_interval=2)  # one full step, one cached

    plan = [(12, 0), (12, 1), (5, 2), (3, 3)]
    eager = [window(f, s) for f, s in plan]
    counter = CompileCounter()
    torch._dynamo.reset()
    try:
        assert unet.compile_blocks(backend=counter) > 0
        assert unet.compile_blocks(backend=counter) == 0  # already compiled with these settings
        counts = []
        for (f, s), expected in zip(plan, eager):
            assert torch.equal(window(f, s), expected), (f, s)
            counts.append(counter.frame_count)
    finally:
        torch._dynamo.reset()
    assert counts[0] > 0 and counts[1] == counts[0] and counts[3] == counts[2], counts
    assert list(unet.state_dict()) == keys


@pytest.mark.parametrize("size,cfg_batch,chunks", [(512, "joint", 1), (256, "sequential", 4)])
def test_activation_estimate_within_20_percent_of_the_traced_peak(size, cfg_batch, chunks):
    """The estimate ComfyUI is given against the traced live-tensor peak of a real-size denoising window (meta
    device: shapes only, seconds)."""
    from bench.unet_memory import Case, traced_peak

    case = Case(size, 16, "float16", cfg_batch, chunks, "window")
    traced = traced_peak(case)
    estimate = activation_peak_bytes(size, 16, torch.float16, cfg_batch=cfg_batch, ff_chunks=chunks)
    assert 0.8 * traced <= estimate <= 1.2 * traced, (traced, estimate)


def test_sequential_guidance_and_chunks_lower_the_traced_peak():
    from bench.unet_memory import Case, meta_unet, traced_peak

    unet = meta_unet("stage2", torch.float16)
    joint = traced_peak(Case(256, 8, what="forward"), unet)
    sequential = traced_peak(Case(256, 8, cfg_batch="sequential", what="forward"), unet)
    chunked = traced_peak(Case(256, 8, ff_chunks=4, what="forward"), unet)
    assert sequential == pytest.approx(joint / 2, rel=0.02)
    assert chunked < 0.7 * joint


def test_command_line_and_options_carry_the_choices_to_the_pipeline():
    from latentsync.__main__ import build_parser
    from latentsync.options import LipSyncOptions, OptionError

    args = build_parser().parse_args(["--video", "v.mp4", "--out", "o.mp4", "--cfg-batch", "sequential",
                                      "--ff-chunks", "4", "--compile"])
    options = LipSyncOptions.from_args(args)
    kwargs = options.pipeline_kwargs()
    assert (kwargs["cfg_batch"], kwargs["ff_chunks"], kwargs["compile"]) == ("sequential", 4, True)
    defaults = LipSyncOptions().pipeline_kwargs()
    assert (defaults["cfg_batch"], defaults["ff_chunks"], defaults["compile"]) == ("joint", 1, False)
    with pytest.raises(OptionError, match="unknown cfg batch 'both'"):
        LipSyncOptions.from_mapping({"cfg_batch": "both"})
    with pytest.raises(OptionError, match="ff chunks must be at least 1"):
        LipSyncOptions.from_mapping({"ff-chunks": "0"})
