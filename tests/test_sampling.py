"""DDIM scheduler, the denoising loop (CFG, 13-channel input, callbacks), DeepCache and golden loop parity."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from conftest import shared_path
from latentsync.models.tiny import random_tiny_unet
from latentsync.parity import loop as loop_parity
from latentsync.parity import scheduler as scheduler_parity
from latentsync.parity.report import load_fixture
from latentsync.sampling import DeepCache, denoise_window, initial_noise, make_scheduler

F, H = 4, 8


def _window(generator: torch.Generator, audio_dim: int = 24):
    latents = torch.randn(1, 4, F, H, H, generator=generator)
    mask = (torch.rand(1, 1, F, H, H, generator=generator) > 0.5).float()
    masked = torch.randn(1, 4, F, H, H, generator=generator)
    ref = torch.randn(1, 4, F, H, H, generator=generator)
    audio = torch.randn(1, F, 50, audio_dim, generator=generator)
    return latents, mask, masked, ref, audio


class FakeUNet:
    """Records what the sampler passes to the U-Net; returns a deterministic function of the input."""

    def __init__(self):
        self.calls = []

    def __call__(self, sample, timestep, encoder_hidden_states=None, deep_cache=None):
        self.calls.append((sample.clone(), timestep.clone(), encoder_hidden_states.clone(), deep_cache))
        return 0.1 * sample[:, :4] + 0.01 * encoder_hidden_states.mean() * torch.ones_like(sample[:, :4])


@pytest.fixture(scope="module")
def tiny():
    return random_tiny_unet(torch.Generator().manual_seed(0))


def test_scheduler_config_and_golden():
    scheduler = make_scheduler()
    scheduler.set_timesteps(20)
    assert scheduler.timesteps.tolist() == list(range(951, 0, -50))
    results = scheduler_parity.check(shared_path("golden", "golden_scheduler.pt"))
    bad = [r.line() for r in results if not r.ok]
    assert not bad, bad
    print("\n".join(r.line() for r in results))


def test_scheduler_check_can_fail(tmp_path):
    fixture = load_fixture(shared_path("golden", "golden_scheduler.pt"))
    fixture["after_first_3_steps"][1] += 1e-3
    fixture["config"]["steps_offset"] = 0
    torch.save(fixture, tmp_path / "bad.pt")
    results = {r.name.split("[")[0]: r for r in scheduler_parity.check(tmp_path / "bad.pt")}
    assert not results["after_step_1"].ok and results["after_step_0"].ok
    assert not results["config.steps_offset"].ok


def test_initial_noise_is_one_frame_repeated_and_seeded():
    state = torch.random.get_rng_state()
    a = initial_noise(5, 4, 6, torch.Generator().manual_seed(1247))
    b = initial_noise(5, 4, 6, torch.Generator().manual_seed(1247), dtype=torch.bfloat16)
    c = initial_noise(5, 4, 6, torch.Generator().manual_seed(1))
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    assert a.shape == (1, 4, 5, 4, 6) and b.dtype == torch.bfloat16
    assert all(torch.equal(a[:, :, i], a[:, :, 0]) for i in range(5))
    assert torch.equal(b, a.to(torch.bfloat16)) and not torch.equal(a, c)
    with pytest.raises(TypeError, match="Generator"):
        initial_noise(5, 4, 6, None)


def test_cfg_batch_order_and_13_channel_input():
    g = torch.Generator().manual_seed(0)
    latents, mask, masked, ref, audio = _window(g)
    fake = FakeUNet()
    steps = []
    denoise_window(fake, make_scheduler(), latents, mask, masked, ref, audio, guidance_scale=2.0,
                   num_inference_steps=3, deepcache_interval=1, on_step=lambda i, n: steps.append((i, n)))
    assert steps == [(0, 3), (1, 3), (2, 3)] and len(fake.calls) == 3
    sample, t, ehs, dc = fake.calls[0]
    assert sample.shape == (2, 13, F, H, H) and t.dim() == 0 and int(t) == 667 and dc is None
    assert torch.equal(sample[:, :4], torch.cat([latents, latents]))
    assert torch.equal(sample[:, 4:5], torch.cat([mask, mask]))
    assert torch.equal(sample[:, 5:9], torch.cat([masked, masked]))
    assert torch.equal(sample[:, 9:13], torch.cat([ref, ref]))
    assert torch.equal(ehs[0], torch.zeros_like(audio[0])) and torch.equal(ehs[1], audio[0])

    fake = FakeUNet()
    denoise_window(fake, make_scheduler(), latents, mask, masked, ref, audio, guidance_scale=1.0,
                   num_inference_steps=2, deepcache_interval=1)
    sample, _, ehs, _ = fake.calls[0]
    assert sample.shape[0] == 1 and torch.equal(ehs, audio)


def test_on_step_can_cancel():
    g = torch.Generator().manual_seed(0)
    fake = FakeUNet()

    def cancel(i, n):
        if i == 1:
            raise KeyboardInterrupt("cancelled")

    with pytest.raises(KeyboardInterrupt):
        denoise_window(fake, make_scheduler(), *_window(g), num_inference_steps=5, on_step=cancel)
    assert len(fake.calls) == 2


@pytest.mark.parametrize("interval", [1, 2, 3, 4])
def test_deepcache_full_step_schedule(tiny, interval):
    g = torch.Generator().manual_seed(0)
    full = []

    def recorder(sample, t, encoder_hidden_states=None, deep_cache=None):
        if deep_cache is None or not deep_cache.reuse:
            full.append(len(recorder.calls))
        recorder.calls.append(int(t))
        return tiny(sample, t, encoder_hidden_states, deep_cache=deep_cache)

    recorder.calls = []
    denoise_window(recorder, make_scheduler(), *_window(g), guidance_scale=1.0, num_inference_steps=7,
                   deepcache_interval=interval)
    assert full == [i for i in range(7) if i % interval == 0]


def test_deepcache_changes_result_and_interval_one_is_off(tiny):
    g = torch.Generator().manual_seed(5)
    window = _window(g)
    run = lambda k: denoise_window(tiny, make_scheduler(), *window, guidance_scale=1.5, num_inference_steps=4,
                                   deepcache_interval=k)
    off, one, on = run(0), run(1), run(3)
    assert torch.equal(off, one)
    assert (off - on).abs().max() > 1e-3
    with pytest.raises(ValueError):
        DeepCache(interval=0)


def test_deepcache_cached_step_recomputes_only_the_shallow_branch(tiny):
    """Cached step = the golden README's recipe: cached input of up_blocks[3] layer 2 + fresh conv_in skip."""
    g = torch.Generator().manual_seed(6)
    sample = torch.randn(2, 13, F, H, H, generator=g)
    sample2 = torch.randn(2, 13, F, H, H, generator=g)
    audio = torch.randn(2, F, 50, 24, generator=g)
    dc = DeepCache(interval=3, branch=0)
    captured = {}
    hook = tiny.up_blocks[3].motion_modules[1].register_forward_hook(lambda m, a, o: captured.setdefault("C", o))
    with torch.no_grad():
        dc.begin_step(0)
        tiny(sample, torch.tensor(951), audio, deep_cache=dc)
        hook.remove()
        dc.begin_step(1)
        assert dc.reuse
        cached_out = tiny(sample2, torch.tensor(901), audio, deep_cache=dc)
        t = torch.tensor(901).expand(2)
        emb = tiny.time_embedding(tiny.time_proj(t))
        h = torch.cat([captured["C"], tiny.conv_in(sample2)], dim=1)
        block = tiny.up_blocks[3]
        h = block.motion_modules[2](block.attentions[2](block.resnets[2](h, emb), audio.flatten(0, 1)))
        manual = tiny.conv_out(tiny.conv_act(tiny.conv_norm_out(h)))
        full = tiny(sample2, torch.tensor(901), audio)
    assert torch.equal(dc.cached, captured["C"])
    torch.testing.assert_close(cached_out, manual, rtol=0, atol=1e-6)
    assert (cached_out - full).abs().max() > 1e-3


@pytest.mark.parametrize("branch", [0, 1, 2, 3, 5, 11])
def test_deepcache_any_branch_reproduces_full_output_on_same_input(tiny, branch):
    g = torch.Generator().manual_seed(7)
    sample = torch.randn(1, 13, F, H, H, generator=g)
    audio = torch.randn(1, F, 50, 24, generator=g)
    dc = DeepCache(interval=2, branch=branch)
    with torch.no_grad():
        dc.begin_step(0)
        full = tiny(sample, 500, audio, deep_cache=dc)
        dc.begin_step(1)
        cached = tiny(sample, 500, audio, deep_cache=dc)
    torch.testing.assert_close(cached, full, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="branch"):
        tiny(sample, 500, audio, deep_cache=DeepCache(interval=2, branch=12))


@pytest.mark.slow
def test_golden_loop_parity_all_runs():
    """All four runs of the fixture: the CFG run without DeepCache (half the work) beside the other three, one torch
    thread each (CI time: 22 s instead of 28 s on 2 cores, whose intra-op threads gain little on the tiny U-Net)."""
    path = shared_path("golden", "golden_loop.pt")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            parts = pool.map(lambda runs: loop_parity.check(path, runs=runs),
                             [["no_deepcache"], ["deepcache", "no_cfg", "no_cfg_deepcache"]])
            results = [r for part in parts for r in part]
    finally:
        torch.set_num_threads(threads)
    names = {r.name for r in results}
    for run in ("no_deepcache", "deepcache", "no_cfg", "no_cfg_deepcache"):
        assert {f"{run}.final", f"{run}.trajectory", f"{run}.unet_out_first4"} <= names
    bad = [r.line() for r in results if not r.ok]
    assert not bad, bad
    print("\n".join(r.line() for r in results))


@pytest.mark.slow
def test_golden_loop_check_can_fail(tmp_path):
    fixture = load_fixture(shared_path("golden", "golden_loop.pt"))
    fixture["final_no_cfg_deepcache"][0, 0, 0, 0, 0] += 0.5
    fixture["trajectories"]["no_cfg_deepcache"][3] += 0.01
    fixture["deepcache"]["full_network_steps"] = [0, 2, 4]
    torch.save(fixture, tmp_path / "golden_loop.pt")
    (tmp_path / fixture["unet_fixture"]).symlink_to(shared_path("golden", fixture["unet_fixture"]))
    results = {r.name.split("[")[0]: r for r in loop_parity.check(tmp_path / "golden_loop.pt",
                                                                    runs=["no_cfg_deepcache"])}
    assert not results["no_cfg_deepcache.final"].ok
    assert not results["no_cfg_deepcache.trajectory"].ok
    assert not results["no_cfg_deepcache.full_network_steps"].ok
    assert results["no_cfg_deepcache.unet_out_first4"].ok and results["timesteps"].ok
