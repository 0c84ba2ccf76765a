"""Installing the pack the way ComfyUI-Manager does (install.py + requirements.txt) and the Comfy Registry's
pyproject.toml rules (https://docs.comfy.org/registry/specifications), checked with ComfyUI's own parser too.

No throwaway venv (minutes of downloads): install.py --dry-run and pip's resolver (`pip install --dry-run
--no-index`) must accept requirements.txt against the current environment, and install.py's plan is checked."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
COMFY = REPO / ".comfy" / "ComfyUI"


def load_install():
    spec = importlib.util.spec_from_file_location("latentsync_install_script", REPO / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pyproject() -> dict:
    with open(REPO / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def requirement_lines() -> list[str]:
    return load_install().read_requirements(str(REPO / "requirements.txt"))


# ---------------------------------------------------------------------------------------------------------------
# pyproject.toml


def test_project_name_follows_registry_rules(pyproject):
    name = pyproject["project"]["name"]
    assert len(name) < 100
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9._-]*", name), "alphanumerics, '-', '_', '.'; starts with a letter"
    assert not re.search(r"[._-]{2}", name), "no consecutive special characters"
    assert name == name.lower()
    assert "comfyui" not in name.lower(), "the registry asks not to put ComfyUI in the name"


def test_version_license_python_and_urls(pyproject):
    project = pyproject["project"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"]), "semantic version X.Y.Z"
    lic = project["license"]
    assert isinstance(lic, dict) and (lic.get("text") or (REPO / lic.get("file", "-")).is_file())
    assert re.fullmatch(r"\s*>=\s*3\.\d+\s*", project["requires-python"])
    assert project["description"]
    assert project["urls"]["Repository"].startswith("https://")


def test_dependencies_mirror_requirements_txt(pyproject):
    def norm(line: str) -> str:
        return re.sub(r"\s+", "", line).lower()

    assert sorted(map(norm, pyproject["project"]["dependencies"])) == sorted(map(norm, requirement_lines()))


def test_tool_comfy_section(pyproject):
    comfy = pyproject["tool"]["comfy"]
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", comfy["PublisherId"])
    assert comfy["DisplayName"]
    assert re.fullmatch(r"https://\S+\.(png|svg|jpg|jpeg|gif)", comfy["Icon"])
    assert comfy["requires-comfyui"].startswith(">=")
    assert "web" not in comfy, "WEB_DIRECTORY already serves web/; tool.comfy.web would load the extension twice"
    # the icon the URL points to is in the repository and within the registry's 800x400 limit
    icon = REPO / comfy["Icon"].split("/main/", 1)[1]
    with Image.open(icon) as im:
        assert im.width <= 800 and im.height <= 400


def test_comfyui_own_parser_reads_the_config(pyproject):
    if not (COMFY / "comfy_config").is_dir():
        message = f"ComfyUI source not available at {COMFY} (run scripts/setup_env.sh)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    sys.path.insert(0, str(COMFY))
    try:
        from comfy_config import config_parser
    finally:
        sys.path.remove(str(COMFY))
    cfg = config_parser.extract_node_configuration(str(REPO))
    assert cfg.project.name == pyproject["project"]["name"]
    assert cfg.project.version == pyproject["project"]["version"]
    assert cfg.project.supported_os == ["OS Independent"]  # empty when a classifier is not one the registry knows
    assert cfg.project.supported_accelerators == ["GPU :: NVIDIA CUDA"]
    assert cfg.project.supported_comfyui_version == ">=0.3.75"
    assert cfg.tool_comfy.publisher_id == pyproject["tool"]["comfy"]["PublisherId"]
    assert cfg.tool_comfy.web is None


# ---------------------------------------------------------------------------------------------------------------
# install.py / requirements.txt


def test_install_plan_skips_torch_and_already_provided_modules():
    install = load_install()
    keep, skipped = install.plan(["torch>=99", "opencv-python-headless>=4.8", "onnxruntime>=1.16", "einops>=0.7"])
    skipped_names = {install.requirement_name(line) for line, _ in skipped}
    assert "torch" in skipped_names and "einops>=0.7" in keep
    # cv2 / onnxruntime are importable here (from whichever distribution): never installed a second time
    assert ("opencv-python-headless" in skipped_names) == (importlib.util.find_spec("cv2") is not None)
    assert ("onnxruntime" in skipped_names) == (importlib.util.find_spec("onnxruntime") is not None)


def test_install_pins_the_installed_torch():
    pins = load_install().torch_constraints()
    assert f"torch=={metadata.version('torch')}" in pins


def test_install_dry_run_resolves_against_this_environment():
    proc = subprocess.run([sys.executable, str(REPO / "install.py"), "--dry-run", "--no-index"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"torch=={metadata.version('torch')}" in proc.stdout  # passed to pip as a constraint
    assert "Would install" not in proc.stdout or "torch-" not in proc.stdout.split("Would install", 1)[1]


def test_pip_resolver_accepts_requirements_txt():
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index",
                           "--disable-pip-version-check", "-r", str(REPO / "requirements.txt")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
