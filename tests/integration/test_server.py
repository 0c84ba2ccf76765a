"""The real ComfyUI 0.3.75 server with the pack: it starts with --strict, /object_info lists every node with the
documented inputs and outputs, the templates, help pages and the web extension are served."""
from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

import comfy_session

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]

# node id -> (required inputs, optional inputs, outputs as (type, name)) - the pack's documented interface
NODES = {
    "LatentSyncModelLoader": (["checkpoint", "version", "dtype", "download_missing"], ["lora", "lora_strength"],
                              [("LATENTSYNC_MODEL", "model")]),
    "LatentSyncWhisperLoader": (["whisper", "download_missing"], [], [("LATENTSYNC_WHISPER", "whisper")]),
    "LatentSyncFaceAnalyzerLoader": (["backend", "download_missing"], [],
                                     [("LATENTSYNC_FACE_ANALYZER", "face_analyzer")]),
    "LatentSyncVAELoader": (["vae_folder"], [], [("VAE", "vae")]),
    "LatentSyncLipSyncVideo": (["video", "model", "vae", "whisper", "face_analyzer", "seed", "steps", "guidance",
                                "deepcache", "deepcache_interval"],
                               ["audio", "length_mode", "max_face_gap", "strict_faces", "score", "face_selection",
                                "face_index", "face_threshold", "filename_prefix", "crf", "preset", "cfg_batch", "ff_chunks",
                                "compile"], [("VIDEO", "video")]),
    "LatentSyncLipSyncImages": (["images", "audio", "frame_rate", "model", "vae", "whisper", "face_analyzer", "seed",
                                 "steps", "guidance", "deepcache", "deepcache_interval"],
                                ["length_mode", "max_face_gap", "strict_faces", "score", "face_selection",
                                 "face_index", "face_threshold", "filename_prefix", "crf", "preset", "cfg_batch",
                                 "ff_chunks", "compile"],
                                [("IMAGE", "images"), ("AUDIO", "audio")]),
    "LatentSyncDetectFaces": (["face_analyzer", "model", "images", "face_selection", "face_index"], ["face_threshold"],
                              [("LATENTSYNC_FACES", "faces"), ("IMAGE", "aligned"), ("MASK", "face_mask")]),
    "LatentSyncLoopToAudio": (["images", "audio", "frame_rate"], [],
                              [("IMAGE", "images"), ("AUDIO", "audio"), ("INT", "frame_count")]),
    "LatentSyncAudioEmbeddings": (["whisper", "audio", "frame_rate", "frame_count"], [],
                                  [("LATENTSYNC_AUDIO_EMBEDS", "audio_embeds")]),
    "LatentSyncMaskLatents": (["faces", "vae"], [],
                              [("LATENTSYNC_FACE_LATENTS", "face_latents"), ("IMAGE", "masked_faces")]),
    "LatentSyncSampler": (["model", "face_latents", "audio_embeds", "seed", "steps", "guidance", "deepcache",
                           "deepcache_interval"], ["cfg_batch", "ff_chunks", "compile"], [("LATENT", "latent")]),
    "LatentSyncDecode": (["vae", "latent", "face_latents"], [], [("IMAGE", "faces")]),
    "LatentSyncPasteFaces": (["images", "faces", "generated"], [], [("IMAGE", "images")]),
    "LatentSyncSyncNetLoader": (["syncnet", "download_missing"], [], [("LATENTSYNC_SYNCNET", "syncnet")]),
    "LatentSyncSyncScore": (["syncnet", "face_analyzer", "frame_rate", "face_selection", "face_index"],
                            ["video", "images", "audio"],
                            [("FLOAT", "confidence"), ("FLOAT", "distance"), ("INT", "offset"), ("IMAGE", "plot")]),
}


def _get_text(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.read().decode("utf-8", errors="replace")


def test_server_started_with_the_pack_and_no_import_failure(comfy_server):
    log = comfy_server.log.read_text(errors="replace")
    assert "IMPORT FAILED" not in log
    assert "Cannot import" not in log
    assert f"custom_nodes/{comfy_session.PACK_NAME}" in log  # listed in "Import times for custom nodes"
    stats = comfy_server.get("/system_stats")
    assert stats["system"]["comfyui_version"] == "0.3.75"
    comfy_session.record_timing("server_start_s", comfy_server.ready_s)
    comfy_session.record_timing("tiny_model_set_s", round(comfy_server.models_s, 2))


def test_object_info_lists_every_node_with_documented_interface(comfy_server):
    info = comfy_server.get("/object_info")
    ours = sorted(k for k, v in info.items() if v.get("python_module") == f"custom_nodes.{comfy_session.PACK_NAME}")
    assert ours == sorted(NODES), f"registered: {ours}"
    for node_id, (required, optional, outputs) in NODES.items():
        d = info[node_id]
        assert d["category"] == "LatentSync"
        assert d["display_name"] and d["description"]
        assert list(d["input"]["required"]) == required, node_id
        assert list(d["input"].get("optional", {})) == optional, node_id
        assert list(zip(d["output"], d["output_name"])) == outputs, node_id
        for name, spec in {**d["input"]["required"], **d["input"].get("optional", {})}.items():
            assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_loader_lists_come_from_the_registered_model_folders(comfy_server):
    info = comfy_server.get("/object_info")

    def options(node, name):
        spec = info[node]["input"]["required"][name]
        return spec[1]["options"] if spec[0] == "COMBO" else spec[0]

    # the official names are always offered (downloaded on demand); the tiny set provides v1.5 and whisper
    assert options("LatentSyncModelLoader", "checkpoint")[:2] == ["v1.5/latentsync_unet.pt", "v1.6/latentsync_unet.pt"]
    assert options("LatentSyncWhisperLoader", "whisper") == ["whisper/tiny.pt"]
    assert options("LatentSyncVAELoader", "vae_folder") == []  # the tiny set, like the official one, has no folder
    assert comfy_session.OFFICIAL_VAE in options("VAELoader", "vae_name")
    assert options("LatentSyncFaceAnalyzerLoader", "backend") == ["auto", "insightface", "offline"]


def test_workflow_templates_are_listed_and_served(comfy_server):
    shipped = sorted(p.stem for p in (REPO / "workflows").glob("*.json"))
    assert len(shipped) >= 3
    listed = comfy_server.get("/api/workflow_templates")
    assert sorted(listed.get(comfy_session.PACK_NAME, [])) == shipped
    for name in shipped:
        status, text = _get_text(f"{comfy_server.url}/api/workflow_templates/{comfy_session.PACK_NAME}/{name}.json")
        assert status == 200
        assert json.loads(text) == json.loads((REPO / "workflows" / f"{name}.json").read_text())
        # the template browser shows /api/workflow_templates/<pack>/<name>.jpg as the thumbnail
        with urllib.request.urlopen(f"{comfy_server.url}/api/workflow_templates/{comfy_session.PACK_NAME}/{name}.jpg",
                                    timeout=30) as r:
            assert r.status == 200 and r.headers["Content-Type"] == "image/jpeg" and r.read(3) == b"\xff\xd8\xff"


def test_help_pages_and_web_extension_are_served(comfy_server):
    for node_id in NODES:
        status, text = _get_text(f"{comfy_server.url}/extensions/{comfy_session.PACK_NAME}/docs/{node_id}.md")
        assert status == 200 and text.startswith("# "), node_id
        title = comfy_server.get("/object_info")[node_id]["display_name"]
        assert text.splitlines()[0] == f"# {title}", node_id
    extensions = comfy_server.get("/extensions")
    assert f"/extensions/{comfy_session.PACK_NAME}/js/latentsync.js" in extensions
