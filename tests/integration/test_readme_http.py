"""The README's HTTP example (curl and Python), taken from README.md and run as written against the session's
server, which is started the way `make serve` starts it on a machine without the model hub (tiny set, offline, the
demo media in input/, its speech cut to the first 0.6 s: comfy_session.SHIPPED_SECONDS). Only COMFY_URL is set,
as the README tells a user whose server is not on port 8188."""
from __future__ import annotations

import ast
import re

import pytest

import comfy_session as cs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CURL_VIDEO = re.compile(r'"filename": "(LatentSync_\d+_\.mp4)", "subfolder": "video"')


def test_the_readme_has_the_three_http_blocks():
    blocks = cs.readme_http_blocks()
    assert [lang for lang, _ in blocks] == ["bash", "python", "python"]
    bash, first, own = (code for _, code in blocks)
    assert "cat workflows/api/latentsync_video.json" in bash  # the shipped file, posted as it is
    assert 'json.load(open("workflows/api/latentsync_video.json"))' in first and "run(prompt)" in first
    assert 'upload("my_clip.mp4")' in own and 'upload("my_speech.wav")' in own


def test_curl_example_completes_and_prints_where_the_video_is(comfy_server):
    run = cs.readme_http_run(comfy_server)
    assert run.curl.returncode == 0, run.curl.stderr[-3000:]
    assert '"status_str": "success"' in run.curl.stdout, run.curl.stdout[-3000:]
    (name,) = CURL_VIDEO.findall(run.curl.stdout)
    assert (comfy_server.output_dir / "video" / name).is_file()
    cs.record_timing("readme_curl_shipped_video_s", round(run.seconds, 1))


def test_python_example_completes_and_prints_where_the_video_is(comfy_server):
    run = cs.readme_http_run(comfy_server)
    assert run.python.returncode == 0, run.python.stderr[-3000:]
    printed = ast.literal_eval(run.python.stdout.strip().splitlines()[-1])
    (curl_name,) = CURL_VIDEO.findall(run.curl.stdout)
    assert printed == [f"output/video/{curl_name}"]  # the same job again: ComfyUI answers it from its cache
    assert (comfy_server.base / printed[0]).is_file()


def test_own_files_example_uploads_and_runs(comfy_server):
    run = cs.readme_http_run(comfy_server)
    assert run.own_files.returncode == 0, run.own_files.stderr[-3000:]
    printed = [ast.literal_eval(line) for line in run.own_files.stdout.strip().splitlines()]
    assert len(printed) == 2 and printed[0] != printed[1]
    info = cs.probe(comfy_server.base / printed[1][0])
    assert info["frames"] == round(cs.OWN_FILES_SECONDS * cs.FPS) == 3 and info["fps"] == cs.FPS, info
    assert (comfy_server.input_dir / "my_clip.mp4").is_file() and (comfy_server.input_dir / "my_speech.wav").is_file()
