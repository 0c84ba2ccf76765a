"""The node classes in-process, on ComfyUI 0.3.75's own modules (no server): type conversions between ComfyUI's
IMAGE / AUDIO / VIDEO / LATENT / VAE and the library (odd sizes, fractional frame rates), the VAE adapter against
ComfyUI's real VAE, the diffusers-folder VAE loader against diffusers, and the one-node paths on frames without a
face (passed through bit-exactly)."""
from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import sys
from fractions import Fraction
from pathlib import Path

import av
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
COMFY = REPO / ".comfy" / "ComfyUI"

if not (COMFY / "comfy_api").is_dir():  # pragma: no cover - environment check
    if os.environ.get("CI"):
        raise RuntimeError(f"ComfyUI source not found at {COMFY} (run scripts/setup_env.sh)")
    pytest.skip(f"ComfyUI source not found at {COMFY}", allow_module_level=True)

# ComfyUI's modules first: its top-level `nodes` must win over this repository's `nodes/` package.
sys.path.insert(0, str(COMFY))
from comfy.cli_args import args  # noqa: E402

if not torch.cuda.is_available():
    args.cpu = True  # what `main.py --cpu` does; model_management reads it at import

import folder_paths  # noqa: E402
import nodes as comfy_nodes  # noqa: E402
from comfy_api.latest import InputImpl, Types  # noqa: E402

assert hasattr(comfy_nodes, "VAELoader"), f"`nodes` resolved to {comfy_nodes.__file__}, not ComfyUI's nodes.py"
# ComfyUI's top-level modules are imported now; keep its folder last on sys.path so names such as `utils` or `app`
# cannot shadow anything for test modules imported after this one.
sys.path.remove(str(COMFY))
sys.path.append(str(COMFY))


def _load_pack():
    name = "comfyui_latentsync_inprocess"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


PACK = _load_pack()
OFFICIAL_VAE = "vae-ft-mse-840000-ema-pruned.safetensors"  # the tiny set's file of that name holds a random TAESD
NODE_LIST = asyncio.run(asyncio.run(PACK.comfy_entrypoint()).get_node_list())
N = {cls.GET_SCHEMA().node_id: cls for cls in NODE_LIST}
T = sys.modules[f"{PACK.__name__}.nodes.types"]
RT = sys.modules[f"{PACK.__name__}.nodes.runtime"]
LOADERS = sys.modules[f"{PACK.__name__}.nodes.loaders"]


# ---------------------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def tiny_models(tiny_model_set):
    """The session's tiny random model set, registered as extra ComfyUI model folders (as extra_model_paths would)."""
    out = tiny_model_set
    folder_paths.add_model_folder_path("latentsync", str(out / "latentsync"), is_default=True)
    folder_paths.add_model_folder_path("vae", str(out / "vae"), is_default=True)
    return out


def video_of(images: torch.Tensor, fps: Fraction, audio: dict | None = None):
    return InputImpl.VideoFromComponents(Types.VideoComponents(images=images, audio=audio, frame_rate=fps))


def random_frames(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """IMAGE batch of 8-bit noise (no face anywhere), as float in [0, 1] like Load Video gives."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, h, w, 3), generator=g, dtype=torch.uint8).float() / 255.0


def smooth_frames(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """IMAGE batch of smooth random colour fields (no face; survives H.264 4:2:0 within a few levels)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 5, generator=g)
    fine = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)
    return (fine.permute(0, 2, 3, 1) * 255).round() / 255


def tone(seconds: float, rate: int, channels: int = 1) -> dict:
    t = torch.arange(int(round(seconds * rate))) / rate
    wave = torch.sin(2 * torch.pi * 220 * t).repeat(channels, 1) * 0.5
    return {"waveform": wave[None], "sample_rate": rate}


# ---------------------------------------------------------------------------------------------------------------
# IMAGE / AUDIO / frame rate conversions


@pytest.mark.parametrize("shape", [(3, 37, 53, 3), (1, 1, 1, 3), (2, 64, 31, 4), (2, 17, 9, 1)])
def test_image_round_trip_odd_sizes_and_channels(shape):
    g = torch.Generator().manual_seed(1)
    img = torch.randint(0, 256, shape, generator=g).float() / 255.0
    frames = T.image_to_uint8(img)
    assert frames.dtype == torch.uint8 and frames.shape == (*shape[:3], 3)
    back = T.uint8_to_image(frames)
    expected = img[..., :3] if shape[-1] >= 3 else img.expand(*shape[:3], 3)
    assert torch.equal(back, expected)  # 8-bit values survive exactly


def test_image_to_uint8_rounds_and_clamps():
    img = torch.tensor([[-0.5, 0.0, 0.4 / 255, 0.6 / 255, 254.6 / 255, 1.0, 2.0]]).reshape(1, 1, 7, 1)
    assert T.image_to_uint8(img)[0, 0, :, 0].tolist() == [0, 0, 0, 1, 255, 255, 255]


def test_image_to_uint8_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        T.image_to_uint8(torch.zeros(0, 8, 8, 3))
    with pytest.raises(ValueError, match="IMAGE batch"):
        T.image_to_uint8(torch.zeros(8, 8, 3))
    with pytest.raises(ValueError, match="channels"):
        T.image_to_uint8(torch.zeros(1, 8, 8, 2))


def test_signed_image_conversions():
    img = random_frames(2, 16, 16)
    signed = T.image_to_signed(img)
    assert signed.shape == (2, 3, 16, 16) and signed.min() >= -1 and signed.max() <= 1
    assert torch.allclose(T.signed_to_image(signed), img, atol=1e-6)


@pytest.mark.parametrize("fps, expected", [
    (25.0, Fraction(25)), (29.97, Fraction(2997, 100)), (23.976, Fraction(2997, 125)),
    (Fraction(30000, 1001), Fraction(30000, 1001)), (15, Fraction(15)),
])
def test_frame_rate_as_exact_fraction(fps, expected):
    assert T.to_fraction(fps) == expected


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf")])
def test_frame_rate_rejects_non_positive(bad):
    with pytest.raises(ValueError):
        T.to_fraction(bad)


def test_audio_conversions_keep_channels_and_rate():
    audio = tone(0.25, 22050, channels=2)
    wave, rate = T.audio_to_waveform(audio)
    assert wave.shape == (2, 5512) and rate == 22050 and wave.dtype == torch.float32
    out = T.waveform_to_audio(wave, rate)
    assert out["waveform"].shape == (1, 2, 5512) and out["sample_rate"] == 22050
    assert torch.equal(out["waveform"], audio["waveform"].float())
    with pytest.raises(ValueError):
        T.audio_to_waveform({"waveform": torch.zeros(1, 1, 0), "sample_rate": 16000})
    with pytest.raises(ValueError):
        T.audio_to_waveform({"waveform": torch.zeros(1, 1, 10), "sample_rate": 0})


def test_trim_audio_to_fractional_frame_rate():
    audio = tone(2.0, 48000)
    out = T.trim_audio(audio, 30, Fraction(30000, 1001))  # 30 frames = 1.001 s
    assert out["waveform"].shape[-1] == 48048
    assert T.trim_audio(audio, 100, Fraction(25))["waveform"].shape[-1] == 96000  # never padded


def test_loop_to_audio_node_pingpong_and_outputs():
    images = random_frames(5, 33, 47)
    out = N["LatentSyncLoopToAudio"].execute(images, tone(1.0, 22050, 2), 30000 / 1001).result
    looped, audio, count = out
    assert count == 30 and looped.shape == (30, 33, 47, 3)  # round(1.0 s * 29.97)
    order = [0, 1, 2, 3, 4, 4, 3, 2, 1, 0] * 3
    assert torch.equal(looped, images[order])
    assert audio["waveform"].shape == (1, 2, 22050) and audio["sample_rate"] == 22050  # 1.001 s wanted: not padded


# ---------------------------------------------------------------------------------------------------------------
# the VAE: ComfyUI's own object as the library's codec; the diffusers-folder loader


def test_vae_codec_matches_comfy_vae_scale_and_layout(tiny_models):
    vae = comfy_nodes.VAELoader().load_vae(OFFICIAL_VAE)[0]
    codec = RT.ComfyVAECodec(vae, chunk=2)
    images = T.image_to_signed(random_frames(3, 64, 64, seed=2))  # (3, 3, 64, 64) in [-1, 1]
    latents = codec.encode(images)
    direct = vae.encode(T.signed_to_image(images))
    assert latents.shape == (3, 4, 8, 8)
    assert torch.allclose(latents, direct * 0.18215, atol=1e-5)
    decoded = codec.decode(latents)
    assert decoded.shape == (3, 3, 64, 64)
    native = vae.decode(direct)  # BHWC in [0, 1]
    assert torch.allclose(decoded, native.permute(0, 3, 1, 2) * 2 - 1, atol=1e-5)


@pytest.fixture(scope="module")
def diffusers_vae_folder(tmp_path_factory):
    """A small diffusers AutoencoderKL folder with the SD-VAE layout (32-group norms, widths of 32, mid attention)."""
    from diffusers import AutoencoderKL

    root = tmp_path_factory.mktemp("vae_folders")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # test-only: the random init of this small VAE
        vae = AutoencoderKL(block_out_channels=(32, 64, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, norm_num_groups=32,
                            latent_channels=4, sample_size=64)
    vae.save_pretrained(root / "small-sd-vae", safe_serialization=True)
    folder_paths.add_model_folder_path("vae", str(root))
    return root / "small-sd-vae"


def test_diffusers_folder_vae_loader_matches_diffusers(diffusers_vae_folder):
    from diffusers import AutoencoderKL

    assert "small-sd-vae" in N["LatentSyncVAELoader"].GET_SCHEMA().inputs[0].options
    vae = N["LatentSyncVAELoader"].execute("small-sd-vae").result[0]
    ref = AutoencoderKL.from_pretrained(str(diffusers_vae_folder)).eval()
    x = T.image_to_signed(random_frames(2, 64, 64, seed=3))
    with torch.no_grad():
        want = ref.encode(x).latent_dist.mean
        want_img = ref.decode(want).sample
    got = vae.encode(T.signed_to_image(x))
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    got_img = vae.decode(want).permute(0, 3, 1, 2) * 2 - 1
    assert torch.allclose(got_img, want_img.clamp(-1, 1), atol=1e-4)


def test_diffusers_folder_vae_loader_explains_what_comfyui_cannot_load(diffusers_vae_folder):
    from diffusers import AutoencoderKL

    with torch.random.fork_rng(devices=[]):
        narrow = AutoencoderKL(block_out_channels=(8, 16, 16, 16), down_block_types=("DownEncoderBlock2D",) * 4,
                               up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, norm_num_groups=8)
    narrow.save_pretrained(diffusers_vae_folder.parent / "narrow-vae", safe_serialization=True)
    # 8-group norms: ComfyUI's SD-VAE class cannot represent them
    with pytest.raises(ValueError, match="norm_num_groups 32"):
        N["LatentSyncVAELoader"].execute("narrow-vae")


def test_vae_folder_choices_are_listed_once_and_follow_changes(tmp_path, monkeypatch):
    """The diffusers-folder VAE loader's options come from a listing kept until a folder changes: building the
    node's definition again (every /object_info) walks nothing; a new VAE folder still shows up."""
    import time

    def vae_folder(path: Path) -> None:
        path.mkdir(parents=True)
        (path / "config.json").write_text("{}")
        (path / "diffusion_pytorch_model.safetensors").write_bytes(b"")

    root = tmp_path / "vae"
    vae_folder(root / "first")
    vae_folder(root / ".hidden" / "skipped")
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "vae", ([str(root)], set()))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "diffusers", ([str(tmp_path / "absent")], set()))
    walks = []
    walk = os.walk
    monkeypatch.setattr(os, "walk", lambda top, *a, **k: (walks.append(top), walk(top, *a, **k))[1])
    options = lambda: N["LatentSyncVAELoader"].GET_SCHEMA().inputs[0].options  # noqa: E731
    assert options() == ["first"] and walks == [str(root)]
    for _ in range(3):
        assert options() == ["first"]
    assert walks == [str(root)]  # listed once
    time.sleep(0.05)  # a new modification time for the folder
    vae_folder(root / "nested" / "second")
    assert options() == ["first", "nested/second"] and len(walks) == 2


def test_comfy_load_vae_reads_the_tiny_sets_official_file_as_taesd(tiny_models):
    """The shipped workflows name vae-ft-mse-840000-ema-pruned.safetensors; ComfyUI's own Load VAE reads the tiny
    set's file of that name as a TAESD (fast on a CPU) and ignores the narrow SD VAE the library reads from it."""
    vae = comfy_nodes.VAELoader().load_vae(OFFICIAL_VAE)[0]
    assert type(vae.first_stage_model).__name__ == "TAESD" and vae.latent_channels == 4
    assert OFFICIAL_VAE in comfy_nodes.VAELoader.INPUT_TYPES()["required"]["vae_name"][0]


def test_decode_node_latent_is_in_the_vae_unscaled_space(tiny_models):
    """LATENT from the pack is in ComfyUI's convention: ComfyUI's own VAE Decode gives the same crops."""
    vae = comfy_nodes.VAELoader().load_vae(OFFICIAL_VAE)[0]
    g = torch.Generator().manual_seed(4)
    samples = torch.randn(3, 4, 8, 8, generator=g)
    faces = (random_frames(2, 64, 64) * 255).to(torch.uint8)
    encoded = T.EncodedFaces(index=torch.tensor([0, 2]), masked_image_latents=torch.zeros(2, 4, 8, 8),
                             ref_latents=torch.zeros(2, 4, 8, 8), mask_latents=torch.zeros(2, 1, 8, 8),
                             faces=faces, pixel_mask=torch.zeros(64, 64), num_frames=3, resolution=64)
    out = N["LatentSyncDecode"].execute(vae, {"samples": samples}, encoded).result[0]
    native = comfy_nodes.VAEDecode().decode(vae, {"samples": samples})[0]
    assert out.shape == (3, 64, 64, 3)
    assert torch.allclose(out[[0, 2]], native[[0, 2]], atol=2 / 255)  # same pixels (up to 8-bit rounding)
    assert torch.all(out[1] == 127 / 255)  # the frame without a face: the grey placeholder


# ---------------------------------------------------------------------------------------------------------------
# the one-node paths: VIDEO in/out and IMAGE in/out on frames without a face


@pytest.fixture(scope="module")
def loaded(tiny_models):
    model = N["LatentSyncModelLoader"].execute("v1.5/latentsync_unet.pt", "auto", "auto", False).result[0]
    whisper = N["LatentSyncWhisperLoader"].execute("whisper/tiny.pt", False).result[0]
    faces = N["LatentSyncFaceAnalyzerLoader"].execute("offline", False).result[0]
    vae = comfy_nodes.VAELoader().load_vae(OFFICIAL_VAE)[0]
    return model, vae, whisper, faces


def test_loaders_cache_and_share_loaded_models(loaded):
    model, _vae, whisper, _faces = loaded
    assert model.version == "1.5" and model.resolution == 256 and model.is_tiny
    assert model.mask.shape == (256, 256)
    again = N["LatentSyncModelLoader"].execute("v1.5/latentsync_unet.pt", "auto", "auto", False).result[0]
    assert again is model  # same file + options: the loaded model is reused
    assert N["LatentSyncWhisperLoader"].execute("whisper/tiny.pt", False).result[0] is whisper


def test_loader_merges_a_lora_with_its_strength(loaded, tiny_models):
    """The optional lora input merges a LoRA file from models/latentsync/loras/ into the U-Net: strength 0 gives the
    base weights exactly, other strengths move the adapted projections by strength x B @ A."""
    base_model = loaded[0]
    base = {k: v.clone() for k, v in base_model.patcher.model.diffusion_model.state_dict().items()}
    key = "up_blocks.1.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q"
    g = torch.Generator().manual_seed(3)
    width = base[key + ".weight"].shape[1]
    adapter = {key + ".lora_A.weight": torch.randn(2, width, generator=g),
               key + ".lora_B.weight": torch.randn(base[key + ".weight"].shape[0], 2, generator=g)}
    folder = tiny_models / "latentsync" / "loras"  # the session's tiny set: removed again below
    folder.mkdir()
    try:
        check_lora_strengths(base_model, base, adapter, key, folder)
    finally:
        shutil.rmtree(folder)


def check_lora_strengths(base_model, base: dict, adapter: dict, key: str, folder: Path) -> None:
    from latentsync.models.lora import save_lora

    save_lora(folder / "person.safetensors", adapter, rank=2, alpha=2, target_modules=["to_q"])
    assert "loras/person.safetensors" in LOADERS.lora_choices()
    assert "loras/person.safetensors" not in LOADERS.unet_choices()

    def weights(strength):
        model = N["LatentSyncModelLoader"].execute("v1.5/latentsync_unet.pt", "auto", "auto", False,
                                                   "loras/person.safetensors", strength).result[0]
        assert model is not base_model
        return model.patcher.model.diffusion_model.state_dict()

    zero = weights(0.0)
    assert all(torch.equal(zero[k], base[k]) for k in base)
    half = weights(0.5)
    delta = adapter[key + ".lora_B.weight"] @ adapter[key + ".lora_A.weight"]
    torch.testing.assert_close(half[key + ".weight"].float() - base[key + ".weight"].float(), 0.5 * delta,
                               rtol=1e-4, atol=1e-4)
    assert all(torch.equal(half[k], base[k]) for k in base if k != key + ".weight")


def test_loader_refuses_paths_outside_model_folders(loaded):
    for bad in ("../../etc/passwd", "/etc/passwd", "v1.5/../../x.pt", "C:/x.pt"):
        with pytest.raises((ValueError, FileNotFoundError)):
            N["LatentSyncModelLoader"].execute(bad, "auto", "auto", False)


@pytest.fixture
def insightface_folder(tmp_path, monkeypatch):
    """A fresh models/insightface folder for ComfyUI (restored afterwards), and no download possible."""
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "insightface", ([str(tmp_path / "insightface")], set()))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "insightface"


def test_face_analyzer_auto_uses_insightface_when_buffalo_l_is_there(insightface_folder, monkeypatch, caplog):
    """Stand-in buffalo_l files (insightface's model loading replaced, as in test_face_detect): `auto` builds the
    InsightFace analyzer and says so on the node (ui payload) and in the log."""
    import insightface.model_zoo as mz

    pack = insightface_folder / "models" / "buffalo_l"
    pack.mkdir(parents=True)
    for name in ("det_10g.onnx", "2d106det.onnx"):
        (pack / name).write_bytes(b"stand-in")

    class StandIn:
        def __init__(self, task):
            self.taskname = task

        def prepare(self, *args, **kwargs):
            pass

    monkeypatch.setattr(mz, "get_model", lambda path, **kw: StandIn(
        "detection" if path.endswith("det_10g.onnx") else "landmark_2d_106"))
    with caplog.at_level("INFO", logger="LatentSync"):
        out = N["LatentSyncFaceAnalyzerLoader"].execute("auto", True)
    analyzer = out.result[0]
    assert analyzer.backend == "insightface" and type(analyzer.detector).__name__ == "InsightFaceDetector"
    (info,) = out.ui["latentsync_face_backend"]
    assert info == {"requested": "auto", "backend": "insightface", "reason": f"buffalo_l found in {pack}"}
    assert f"face analyzer auto -> InsightFace buffalo_l: buffalo_l found in {pack}" in caplog.text


def test_face_analyzer_auto_falls_back_to_offline_and_says_why(insightface_folder, caplog):
    with caplog.at_level("INFO", logger="LatentSync"):
        out = N["LatentSyncFaceAnalyzerLoader"].execute("auto", False)
    assert out.result[0].backend == "offline" and type(out.result[0].detector).__name__ == "RetinaFaceDetector"
    (info,) = out.ui["latentsync_face_backend"]
    target = insightface_folder / "models" / "buffalo_l"  # the first insightface folder: where a download would go
    assert info == {"requested": "auto", "backend": "offline",
                    "reason": f"buffalo_l is not in {target} and download_missing is off in the loader node"}
    assert [r.levelname for r in caplog.records if "auto -> offline RetinaFace" in r.message] == ["WARNING"]
    with_download = N["LatentSyncFaceAnalyzerLoader"].execute("auto", True).ui["latentsync_face_backend"][0]
    assert with_download["backend"] == "offline" and "HF_HUB_OFFLINE" in with_download["reason"]
    assert N["LatentSyncFaceAnalyzerLoader"].GET_SCHEMA().inputs[0].default == "auto"
    assert "LatentSync: face detection on the CPU (onnxruntime)" in caplog.text


@pytest.mark.parametrize("device", [torch.device("cuda", 1), torch.device("mps")])
def test_face_analyzer_offline_on_a_gpu_runs_through_torch_there(device, monkeypatch, caplog):
    """ComfyUI's device (CUDA or MPS) reaches the offline detector, which the log says runs through torch there."""
    made = []
    monkeypatch.setattr(sys.modules[f"{PACK.__name__}.nodes.runtime"], "torch_device", lambda: device)
    monkeypatch.setattr(sys.modules[f"{PACK.__name__}.latentsync.face.detector"], "create_face_detector",
                        lambda backend, models_dir=None, device="cpu": made.append((backend, device)) or object())
    with caplog.at_level("INFO", logger="LatentSync"):
        N["LatentSyncFaceAnalyzerLoader"].execute("offline", False)
    assert made == [("offline", str(device))]
    assert f"face detection on the GPU ({device}, offline RetinaFace through torch)" in caplog.text
def decoded(video) -> tuple[torch.Tensor, Fraction, dict]:
    """Frames (IMAGE), frame rate and AUDIO of a VIDEO, decoded by ComfyUI itself."""
    comp = video.get_components()
    return comp.images, comp.frame_rate, comp.audio


def temp_outputs() -> list[str]:
    folder = Path(folder_paths.get_temp_directory()) / "latentsync"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_video_node_passes_frames_without_face_through(loaded):
    model, vae, whisper, faces = loaded
    fps = Fraction(30000, 1001)
    images = smooth_frames(4, 47, 63, seed=5)  # odd size, no face
    audio = tone(0.3, 44100, channels=2)
    out = N["LatentSyncLipSyncVideo"].execute(video_of(images, fps), model, vae, whisper, faces, 1, 2, 1.5, True, 3,
                                              audio=audio)
    video = out.result[0]
    assert isinstance(video, InputImpl.VideoFromFile)  # backed by the encoded file in ComfyUI's temp folder
    path = Path(video.get_stream_source())
    assert path.parent == Path(folder_paths.get_temp_directory()) / "latentsync" and path.is_file()
    frames, rate, out_audio = decoded(video)
    assert rate == fps
    n = round(Fraction(13230, 44100) * fps)  # 0.3 s at 29.97 fps = 9 frames (ping-pong over the 4)
    assert frames.shape == (n, 48, 64, 3)  # odd sizes padded by one pixel for H.264
    order = [0, 1, 2, 3, 3, 2, 1, 0, 0]
    # no face: every frame as it came in (up to the H.264 encode)
    assert (frames[:, :47, :63] - images[order]).abs().mean() < 6 / 255
    assert out_audio["sample_rate"] == 44100 and out_audio["waveform"].shape[1] == 2
    assert abs(out_audio["waveform"].shape[-1] - 13230) < 1024  # the audio, cut to the frames (AAC frames)
    assert out.ui["latentsync_faces"][0]["without_face"] == n
    assert not [p for p in temp_outputs() if ".part" in p]
    # ComfyUI's own video preview of that file on the node (what Save Video's ui.PreviewVideo sends)
    assert out.ui["images"] == [{"filename": path.name, "subfolder": "latentsync", "type": "temp"}]
    assert out.ui["animated"] == (True,)
    assert N["LatentSyncLipSyncVideo"].GET_SCHEMA().is_output_node
    assert "crf=18.0" in x264_settings(path) and "subme=7" in x264_settings(path)  # defaults: CRF 18, preset medium


def x264_settings(path: Path) -> str:
    """The settings x264 writes into the stream it encodes (its SEI message)."""
    data = path.read_bytes()
    start = data.index(b"x264 - core")
    return data[start:data.index(b"\x00", start)].decode("ascii", errors="replace")


@pytest.fixture
def output_dir(tmp_path, monkeypatch) -> Path:
    """ComfyUI's output folder, for this test only."""
    monkeypatch.setattr(folder_paths, "output_directory", str(tmp_path / "output"))
    return tmp_path / "output"


def test_video_node_saves_to_output_with_its_quality_settings(loaded, output_dir):
    model, vae, whisper, faces = loaded
    video = video_of(smooth_frames(3, 32, 32, seed=4), Fraction(25), audio=tone(0.2, 16000))
    run = N["LatentSyncLipSyncVideo"].execute
    out = run(video, model, vae, whisper, faces, 1, 1, 1.0, False, 3, filename_prefix="lipsync/test", crf=30,
              preset="ultrafast")
    (saved,) = out.ui["images"]
    assert saved["type"] == "output" and saved["subfolder"] == "lipsync" and saved["filename"].startswith("test_")
    file = output_dir / "lipsync" / saved["filename"]
    temp = Path(out.result[0].get_stream_source())
    settings = x264_settings(temp)
    assert "crf=30.0" in settings and "subme=0" in settings  # ultrafast
    with av.open(str(temp)) as a, av.open(str(file)) as b:  # the streams copied, not encoded again
        assert [p.size for p in a.demux(video=0)] == [p.size for p in b.demux(video=0)]
    assert not [p for p in file.parent.iterdir() if p.name.startswith(".")]  # no part file left
    validate = N["LatentSyncLipSyncVideo"].validate_inputs
    assert validate(crf=20, preset="slow") is True and validate() is True
    assert "unknown x264 preset 'fastest'" in validate(preset="fastest")
    assert "crf must be in [0, 51]" in validate(crf=52)


def test_video_node_uses_the_videos_own_audio_when_none_is_connected(loaded):
    model, vae, whisper, faces = loaded
    images = random_frames(3, 32, 32, seed=6)
    video = video_of(images, Fraction(25), audio=tone(0.2, 16000))
    frames, _rate, audio = decoded(
        N["LatentSyncLipSyncVideo"].execute(video, model, vae, whisper, faces, 1, 2, 1.5, False, 3).result[0])
    assert frames.shape[0] == 5 and abs(audio["waveform"].shape[-1] - 3200) < 1024
    with pytest.raises(ValueError, match="no audio track"):
        N["LatentSyncLipSyncVideo"].execute(video_of(images, Fraction(25)), model, vae, whisper, faces, 1, 2, 1.5,
                                            False, 3)


class FileOnlyVideo(InputImpl.VideoFromFile):
    """Load Video's VIDEO, made to fail if anything decodes all of it into memory."""

    def get_components(self):
        raise AssertionError("the whole video was decoded into memory")


def real_clip(path: Path, frames: int) -> Path:
    """The first `frames` frames of the real clip with as long a stereo 44.1 kHz track, at 15 fps."""
    from conftest import shared_path
    from latentsync.video_io import read_video, write_video

    images = read_video(shared_path("media", "clip_speaking_woman_frontal_350px_15fps.mp4")).frames[:frames]
    write_video(path, images, 15, audio=tone(frames / 15, 44100, channels=2)["waveform"][0], sample_rate=44100)
    return path


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory):
    """12 frames of the real clip with a 0.8 s stereo 44.1 kHz track."""
    return real_clip(tmp_path_factory.mktemp("clips") / "face_clip.mp4", 12)


def test_video_node_streams_from_the_file_and_save_video_copies_the_streams(loaded, tmp_path):
    model, vae, whisper, faces = loaded
    clip = real_clip(tmp_path / "short_clip.mp4", 4)  # ComfyUI's VAE on the tiny set: about a second a frame
    before = clip.read_bytes()
    out = N["LatentSyncLipSyncVideo"].execute(FileOnlyVideo(str(clip)), model, vae, whisper, faces, 1, 1, 1.0,
                                              False, 3, length_mode="loop")
    video = out.result[0]
    report = out.ui["latentsync_faces"][0]
    assert report["frames"] == 4 and report["with_face"] == 4 and report["length_mode"] == "loop"
    assert "one 16-frame window takes about" in report["notes"][0]  # said on a CPU before the run starts
    saved = tmp_path / "saved.mp4"
    video.save_to(str(saved))  # what Save Video does: the streams are copied, not encoded again
    with av.open(str(video.get_stream_source())) as a, av.open(str(saved)) as b:
        assert [p.size for p in a.demux(video=0)] == [p.size for p in b.demux(video=0)]
    assert clip.read_bytes() == before  # the input is never modified


def test_cancel_in_the_video_node_leaves_no_file(loaded, face_clip, monkeypatch):
    import comfy.model_management as mm

    model, vae, whisper, faces = loaded
    calls = {"n": 0}

    def cancel_later():
        calls["n"] += 1
        if calls["n"] > 2:  # the run is under way (the part file exists; the stage threads are working)
            raise mm.InterruptProcessingException()

    existing = temp_outputs()
    monkeypatch.setattr(RT, "check_cancel", cancel_later)
    with pytest.raises(mm.InterruptProcessingException):
        N["LatentSyncLipSyncVideo"].execute(FileOnlyVideo(str(face_clip)), model, vae, whisper, faces, 1, 3, 1.0,
                                            False, 3)
    assert temp_outputs() == existing  # neither a part file nor a partial video


def test_images_node_length_modes_and_strict_faces(loaded):
    model, vae, whisper, faces = loaded
    images = random_frames(4, 24, 24, seed=8)
    out_images, out_audio = N["LatentSyncLipSyncImages"].execute(
        images, tone(0.2, 16000), 10.0, model, vae, whisper, faces, 1, 1, 1.0, False, 3,
        length_mode="silence").result
    assert out_images.shape[0] == 4 and out_audio["waveform"].shape[-1] == 6400  # the whole video; audio padded
    assert torch.equal(out_audio["waveform"][..., 3200:], torch.zeros(1, 1, 3200))
    with pytest.raises(ValueError, match="strict faces: no face in output frame 0"):
        N["LatentSyncLipSyncImages"].execute(images, tone(0.2, 16000), 10.0, model, vae, whisper, faces, 1, 1, 1.0,
                                             False, 3, strict_faces=True)


def test_bf16_on_a_cpu_without_native_bf16_becomes_fp32(caplog, monkeypatch):
    precision = sys.modules[f"{PACK.__name__}.latentsync.precision"]  # the pack's own copy of the library
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2"})
    monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")
    with caplog.at_level("WARNING", logger="LatentSync"):
        assert RT.pick_dtype("bf16", torch.device("cpu")) == torch.float32
    assert "using float32 instead" in caplog.text
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert RT.pick_dtype("bf16", torch.device("cpu")) == torch.bfloat16


def test_a_damaged_model_file_is_one_clear_error(tmp_path):
    folder = tmp_path / "latentsync" / "broken"
    folder.mkdir(parents=True)
    (folder / "latentsync_unet.pt").write_bytes(b"PK\x03\x04 not really a checkpoint")
    folder_paths.add_model_folder_path("latentsync", str(tmp_path / "latentsync"))
    with pytest.raises(RuntimeError) as err:
        N["LatentSyncModelLoader"].execute("broken/latentsync_unet.pt", "1.5", "auto", False)
    text = str(err.value)
    assert "cannot load the LatentSync U-Net from" in text and "latentsync_unet.pt" in text
    assert "download it again" in text


def test_images_node_outputs_image_and_audio(loaded):
    model, vae, whisper, faces = loaded
    images = random_frames(2, 21, 35, seed=7)
    result = N["LatentSyncLipSyncImages"].execute(images, tone(0.5, 16000), 12.5, model, vae, whisper, faces, 1, 2,
                                                  1.0, True, 3)
    out_images, out_audio = result.result
    assert out_images.shape == (6, 21, 35, 3) and out_images.dtype == torch.float32  # round(0.5 * 12.5) = 6
    assert torch.equal(out_images, images[[0, 1, 1, 0, 0, 1]])
    assert out_audio["waveform"].shape == (1, 1, 7680) and out_audio["sample_rate"] == 16000
    previews = result.ui["images"]  # ComfyUI's image preview of the frames, on the node
    assert len(previews) == 6 and all(p["type"] == "temp" and p["filename"].endswith(".png") for p in previews)


def test_images_node_previews_a_sample_of_frames_and_saves_a_video(loaded, output_dir):
    model, vae, whisper, faces = loaded
    images = smooth_frames(20, 24, 32, seed=2)
    run = N["LatentSyncLipSyncImages"].execute
    out = run(images, tone(2.0, 16000), 20.0, model, vae, whisper, faces, 1, 1, 1.0, False, 3, length_mode="cut_off")
    assert len(out.ui["images"]) == 16  # a sample, evenly spread, not all 20 frames
    saved = run(images, tone(2.0, 16000), 20.0, model, vae, whisper, faces, 1, 1, 1.0, False, 3,
                length_mode="cut_off", filename_prefix="LatentSyncImages", crf=0).ui
    (item,) = saved["images"]
    assert item["type"] == "output" and saved["animated"] == (True,)
    frames, rate, audio = decoded(InputImpl.VideoFromFile(
        str(output_dir / item["subfolder"] / item["filename"])))
    assert frames.shape == (20, 24, 32, 3) and rate == 20
    assert (frames - images).abs().mean() < 6 / 255  # the frames, up to the H.264 4:2:0 encode
    assert abs(audio["waveform"].shape[-1] - 16000) < 1024


def test_missing_official_files_name_what_and_where_when_download_is_off(loaded):
    # v1.6 is not in the tiny set; with download_missing off the error says which file, from where, to where
    with pytest.raises(FileNotFoundError) as err:
        N["LatentSyncModelLoader"].execute("v1.6/latentsync_unet.pt", "auto", "auto", False)
    text = str(err.value)
    assert "latentsync/v1.6/latentsync_unet.pt" in text and "ByteDance/LatentSync-1.6" in text


def test_insightface_backend_without_models_explains_where_they_go(loaded, monkeypatch, tmp_path):
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "insightface", ([str(tmp_path / "insightface")], set()))
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        N["LatentSyncFaceAnalyzerLoader"].execute("insightface", False)
    assert "buffalo_l" in str(err.value) and str(tmp_path / "insightface" / "models" / "buffalo_l") in str(err.value)


def test_model_folders_are_added_not_replaced():
    paths = folder_paths.get_folder_paths("latentsync")
    assert os.path.join(folder_paths.models_dir, "latentsync") in paths
    RT.register_model_folders()  # idempotent: no duplicates
    assert folder_paths.get_folder_paths("latentsync") == paths
    assert os.path.join(folder_paths.models_dir, "insightface") in folder_paths.get_folder_paths("insightface")


def test_unet_is_managed_by_comfyui_memory_manager(loaded):
    """The U-Net is loaded through model_management (listed among ComfyUI's loaded models) and is unloaded when
    ComfyUI frees memory for another model; the next use loads it again."""
    import comfy.model_management as mm

    model = loaded[0]
    device = RT.load_to_device(model.patcher)
    assert any(m.model is model.patcher for m in mm.current_loaded_models)
    assert next(model.unet.parameters()).device.type == torch.device(device).type
    mm.free_memory(1e30, device)  # what another model's load does when memory is short
    assert not any(m.model is model.patcher for m in mm.current_loaded_models)
    managed = RT.ManagedUNet(model.patcher)
    next(managed.parameters())  # the sampler's first question loads it back
    assert any(m.model is model.patcher for m in mm.current_loaded_models)


# ---------------------------------------------------------------------------------------------------------------
# sync scoring: the score switch of the one-node paths and the Sync Score node's input checks


def test_score_switch_reports_an_unscorable_output_on_the_node_without_failing(loaded):
    """Frames without a face pass through the lip-sync; the switch then cannot score them: the node still returns
    its result, and says why on the node (the tiny set's SyncNet-v2 was found through the model folders)."""
    model, vae, whisper, faces = loaded
    images = random_frames(2, 40, 40, seed=8)
    result = N["LatentSyncLipSyncImages"].execute(images, tone(0.48, 16000), 25.0, model, vae, whisper, faces, 1, 2,
                                                  1.0, True, 3, score=True)
    assert result.result[0].shape == (12, 40, 40, 3)
    (report,) = result.ui["latentsync_sync"]
    assert report["label"] == "output" and "no face found in any of the 12 frames" in report["error"]
    assert result.ui["latentsync_faces"][0]["without_face"] == 12
    off = N["LatentSyncLipSyncImages"].execute(images, tone(0.48, 16000), 25.0, model, vae, whisper, faces, 1, 2,
                                               1.0, True, 3)
    assert "latentsync_sync" not in off.ui  # the switch is off by default


def test_sync_score_node_says_what_to_connect(loaded):
    faces = loaded[3]
    syncnet = N["LatentSyncSyncNetLoader"].execute("auxiliary/syncnet_v2.model", False).result[0]
    assert syncnet.is_tiny
    score = N["LatentSyncSyncScore"].execute
    images = random_frames(8, 32, 32, seed=9)
    with pytest.raises(ValueError, match="connect a VIDEO, or IMAGE frames \\+ AUDIO"):
        score(syncnet, faces, 25.0, "largest", 0)
    with pytest.raises(ValueError, match="connect the AUDIO"):
        score(syncnet, faces, 25.0, "largest", 0, images=images)
    with pytest.raises(ValueError, match="the video has no audio track"):
        score(syncnet, faces, 25.0, "largest", 0, video=video_of(images, Fraction(25)))
    with pytest.raises(ValueError, match="cannot score lip sync: no face found in any of the 8 frames"):
        score(syncnet, faces, 25.0, "largest", 0, images=images, audio=tone(1.0, 16000))
    with pytest.raises((ValueError, FileNotFoundError)):
        N["LatentSyncSyncNetLoader"].execute("../../etc/passwd", False)


def test_pack_without_opencv_does_not_load_and_names_install_py(monkeypatch):
    """OpenCV comes from install.py, not requirements.txt: without it the node list fails with that advice (what
    ComfyUI logs, and what ComfyUI-Manager's 'Try fix' answers by running install.py)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "cv2" else real(name, *a))
    with pytest.raises(ImportError, match=r"needs OpenCV \(module cv2.*install\.py"):
        sys.modules[f"{PACK.__name__}.nodes"].all_nodes()


def test_both_one_node_paths_and_the_detect_node_choose_the_speaker_with_optional_inputs():
    for node_id in ("LatentSyncLipSyncVideo", "LatentSyncLipSyncImages", "LatentSyncDetectFaces"):
        inputs = N[node_id].GET_SCHEMA().inputs
        by_name = {i.id: i for i in inputs}
        assert by_name["face_selection"].options == ["largest", "index", "center"]
        assert by_name["face_selection"].default == "largest" and by_name["face_index"].default == 0
        assert by_name["face_threshold"].default == 0.5 and by_name["face_threshold"].optional
    for node_id in ("LatentSyncLipSyncVideo", "LatentSyncLipSyncImages"):  # appended after score: saved workflows load
        ids = [i.id for i in N[node_id].GET_SCHEMA().inputs]
        start = ids.index("score") + 1
        assert ids[start:start + 3] == ["face_selection", "face_index", "face_threshold"]
        assert all(i.optional for i in N[node_id].GET_SCHEMA().inputs[start - 1:])
    assert N["LatentSyncSyncScore"].GET_SCHEMA().inputs  # the score node keeps its own two modes
    score_modes = {i.id: i for i in N["LatentSyncSyncScore"].GET_SCHEMA().inputs}["face_selection"].options
    assert score_modes == ["largest", "index"]


def test_images_node_takes_the_face_choice(loaded):
    model, vae, whisper, faces = loaded
    images = random_frames(2, 24, 24, seed=9)
    out_images, _ = N["LatentSyncLipSyncImages"].execute(
        images, tone(0.2, 16000), 10.0, model, vae, whisper, faces, 1, 1, 1.0, False, 3,
        face_selection="center", face_index=0, face_threshold=0.9).result
    assert torch.equal(out_images, images)  # no face in noise: passed through, whatever the choice
    with pytest.raises(ValueError, match="face threshold must be at most 1.0"):
        N["LatentSyncLipSyncImages"].execute(images, tone(0.2, 16000), 10.0, model, vae, whisper, faces, 1, 1, 1.0,
                                             False, 3, face_threshold=2.0)


# ---------------------------------------------------------------------------------------------------------------
# names that match: the README, the nodes, the length modes, the version on the loader


def test_readme_node_table_matches_the_nodes():
    import re

    text = (REPO / "README.md").read_text(encoding="utf-8")
    table = text[text.index("| node | inputs → outputs |"):].split("\n\n")[0]
    rows = re.findall(r"^\| \*\*(.+?)\*\* `(\w+)` \| (.*) \|$", table, flags=re.M)
    assert {node_id: name for name, node_id, _ in rows} == {i: c.GET_SCHEMA().display_name for i, c in N.items()}
    types = {io_.get_io_type() for c in N.values() for io_ in [*c.GET_SCHEMA().inputs, *c.GET_SCHEMA().outputs]}
    for _name, node_id, cell in rows:
        for custom in re.findall(r"LATENTSYNC_[A-Z_]+", cell):
            assert custom in types, f"{node_id}: the README names {custom}, the code has {sorted(types)}"
    modes = re.findall(r"^\| `(\w+)` ", text[text.index("| mode | output length |"):].split("\n\n")[0], flags=re.M)
    lib = sys.modules[f"{PACK.__name__}.latentsync.timeline"]
    assert sorted(modes) == sorted(lib.LENGTH_MODES)


def test_bounce_is_accepted_by_the_one_node_paths(loaded):
    for node in ("LatentSyncLipSyncVideo", "LatentSyncLipSyncImages"):
        assert N[node].validate_inputs(length_mode="bounce") is True
        assert "unknown length mode 'boomerang'" in N[node].validate_inputs(length_mode="boomerang")
    model, vae, whisper, faces = loaded
    images = random_frames(3, 24, 24, seed=1)
    out = N["LatentSyncLipSyncImages"].execute(images, tone(0.4, 16000), 15.0, model, vae, whisper, faces, 1, 1,
                                               1.0, False, 3, length_mode="bounce")
    assert torch.equal(out.result[0], images[[0, 1, 2, 2, 1, 0]])  # ping-pong
    assert out.ui["latentsync_faces"][0]["length_mode"] == "pingpong"


def test_model_loader_shows_the_version_and_how_it_was_chosen(loaded):
    loader = N["LatentSyncModelLoader"].execute
    (info,) = loader("v1.5/latentsync_unet.pt", "auto", "auto", False).ui["latentsync_model"]
    assert info == {"version": "1.5", "resolution": 256, "how": "auto: from the folder name v1.5/", "assumed": False,
                    "tiny": True}
    (info,) = loader("v1.5/latentsync_unet.pt", "1.5", "auto", False).ui["latentsync_model"]
    assert info["how"] == "chosen in the loader"
    loaders = sys.modules[f"{PACK.__name__}.nodes.loaders"]
    guess = loaders.resolve_version("auto", "custom/unet.safetensors")
    assert guess.version == "1.5" and guess.assumed and "the name has no version" in guess.how
    assert loaders.resolve_version("auto", "latentsync-1.6/unet.pt").version == "1.6"


def test_sync_score_node_reads_a_video_file_window_by_window(loaded, face_clip, monkeypatch):
    """A VIDEO backed by a file is scored from the file, decoded CHUNK frames at a time (never get_components), with
    the figures the library's own file scoring gives; an AUDIO input replaces the file's track."""
    from latentsync.eval.files import score_file

    faces = loaded[3]
    syncnet = N["LatentSyncSyncNetLoader"].execute("auxiliary/syncnet_v2.model", False).result[0]
    score_mod = sys.modules[f"{PACK.__name__}.nodes.score"]
    monkeypatch.setattr(score_mod, "CHUNK", 5)
    reads = []
    video_io = sys.modules[f"{PACK.__name__}.latentsync.video_io"]
    read = video_io.VideoFileSource.read
    monkeypatch.setattr(video_io.VideoFileSource, "read",
                        lambda self, start, stop: (reads.append(stop - start), read(self, start, stop))[1])
    out = N["LatentSyncSyncScore"].execute(syncnet, faces, 25.0, "largest", 0, video=FileOnlyVideo(str(face_clip)))
    assert reads == [5, 5, 2]  # 12 frames, 5 at a time
    want = score_file(face_clip, syncnet=syncnet.patcher.model.syncnet, detector=faces.detector)
    confidence, distance, offset, _plot = out.result
    assert (confidence, distance, offset) == pytest.approx((want.confidence, want.distance, want.offset_frames))
    silent = {"waveform": torch.zeros(1, 1, 16000), "sample_rate": 16000}
    other = N["LatentSyncSyncScore"].execute(syncnet, faces, 25.0, "largest", 0, video=FileOnlyVideo(str(face_clip)),
                                             audio=silent).result
    assert other[:3] != out.result[:3]  # scored against the connected audio, not the file's track


# ---------------------------------------------------------------------------------------------------------------
# downloads started by a loader


def test_loader_download_goes_to_the_first_configured_folder_with_progress_and_cancel(tmp_path, monkeypatch):
    """A missing official file is downloaded (here from a Hugging Face-like server on 127.0.0.1) into the first
    latentsync folder (what extra_model_paths.yaml configures comes first), not models/latentsync; the node's
    progress bar moves as the bytes arrive; Cancel stops it with nothing under the final name, and the next try
    resumes from the part file."""
    import comfy.model_management as mm
    import comfy.utils
    from test_hub import serve

    loaders = sys.modules[f"{PACK.__name__}.nodes.loaders"]
    hub = sys.modules[f"{PACK.__name__}.latentsync.hub"]
    extra, default = tmp_path / "ssd" / "lipsync-models", tmp_path / "models" / "latentsync"
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "latentsync", ([str(extra), str(default)], set()))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "DOWNLOAD_BLOCK", 1000)
    payload = bytes(range(256)) * 20  # 5120 bytes: 6 blocks
    updates, cancels = [], []
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", lambda value, total, preview, node_id=None:
                        updates.append((value, total)))

    def cancel_on_the_third_block():
        cancels.append(1)
        if len(cancels) == 3:
            raise mm.InterruptProcessingException()

    log = []
    target = extra / "v1.6" / "latentsync_unet.pt"
    with serve({"/ByteDance/LatentSync-1.6/resolve/main/latentsync_unet.pt": payload}, log) as base:
        monkeypatch.setenv("HF_ENDPOINT", base)
        monkeypatch.setattr(RT, "check_cancel", cancel_on_the_third_block)
        with pytest.raises(mm.InterruptProcessingException):
            loaders.locate_latentsync_file("v1.6/latentsync_unet.pt", hub.unet_file("1.6"), True)
        assert not target.exists() and (target.parent / "latentsync_unet.pt.part").stat().st_size == 3000
        monkeypatch.setattr(RT, "check_cancel", lambda: None)
        path = loaders.locate_latentsync_file("v1.6/latentsync_unet.pt", hub.unet_file("1.6"), True)
    assert Path(path) == target and target.read_bytes() == payload and not default.exists()
    assert log[-1] == ("GET", "/ByteDance/LatentSync-1.6/resolve/main/latentsync_unet.pt", "bytes=3000-")
    assert [u for u in updates if u[1] == 200][:2] == [(39, 200), (78, 200)]  # 0.5 % steps of the bytes
    assert updates[-1] == (200, 200)
