"""The survey on a researcher's own network and images: a generated ImageFolder (3 classes of 36×36 RGB PNGs,
resized and centre-cropped to 32×32) and a torchvision ResNet-18 with weights this module trains itself, behind
ImageNet's normalization; the methods include LIME, occlusion and Grad-CAM with their defaults.

``python -m tests.flows.own_model FOLDER [flow|dvc]`` builds the project copy in FOLDER and runs the survey there
(see :func:`build_and_run`); tests/conftest.py starts it in the background when the session collects
tests/flows/test_own_model.py, so that its minutes run on the second core beside the unit tests.
"""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
#: the background run tests/conftest.py starts at collection: (process, project folder, log file)
OWN_MODEL_RUN = pytest.StashKey[tuple[subprocess.Popen, Path, Path]]()
CLASSES = ("disc", "bars", "checks")
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
GRADIENT_METHODS = ["gradient", "gradient_x_input", "integrated_gradients", "smoothgrad", "deeplift", "deconvnet",
                    "guided_backprop", "gradcam", "excitation_backprop", "lrp.z", "lrp.epsilon", "lrp.alpha_beta",
                    "lrp.epsilon_plus", "lrp.epsilon_plus_flat", "lrp.epsilon_gamma_box",
                    "lrp.epsilon_alpha2_beta1", "taylor", "dtd.w2", "dtd.zplus", "dtd.zb", "patternnet",
                    "patternattribution", "random"]


SIDE = 32  #: the side the model sees (the PNGs are a little larger: resize and centre crop)
EXTRA_METHODS = ["occlusion", "lime"]  #: with their defaults (issue 29: they must work on 32x32 RGB at once)


def write_images(root: Path, per_class: int = 10, side: int = 36, seed: int = 0) -> None:
    """``root/<class>/<i>.png``: a disc, vertical bars or a checkerboard in a random colour on noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cy, cx = rng.integers(side // 3, 2 * side // 3, size=2)
            if c == 0:
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 < (side // 5) ** 2
            elif c == 1:
                mask = ((xx + cx) // 3) % 2 == 0
            else:
                mask = (((xx + cx) // 5) + ((yy + cy) // 5)) % 2 == 0
            img = rng.uniform(0, 0.35, size=(side, side, 3))
            img[mask] = rng.uniform(0.5, 1.0, size=3)
            Image.fromarray((img * 255).astype(np.uint8)).save(root / name / f"{i}.png")


def write_resnet18(path: Path, seed: int = 0) -> None:
    """torchvision's ResNet-18 for the 3 classes, initialised from ``seed`` and trained for a few steps on the
    images (its state_dict, as a researcher saves one)."""
    import torchvision

    from xaicore.data import load_dataset
    from xaicore.models import Normalize

    torch.manual_seed(seed)
    net = torchvision.models.resnet18(num_classes=len(CLASSES))
    ds = load_dataset("imagefolder", root=str(path.parent / "images"), size=SIDE, resize=SIDE, test_fraction=0.3,
                      seed=seed)
    norm = Normalize(IMAGENET["mean"], IMAGENET["std"])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for _ in range(12):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(norm(ds.x_train)), ds.y_train).backward()
        opt.step()
    torch.save(net.eval().state_dict(), path)


#: the analysis stages (planted digits, §7 meta methods) at test size: seconds instead of a minute
TINY_ANALYSIS = {"epochs": 2, "methods": ["gradient", "lrp.epsilon_plus", "patternattribution", "random"],
                 "spray": {"method": "lrp.epsilon_plus", "k_max": 4, "n_neighbors": 5},
                 "tcav": {"layers": ["fc1"], "n_examples": 12, "n_random": 3},
                 "dissect": {"layers": ["conv2"], "n_images": 40},
                 "truth": {"regimes": ["absent", "confound", "noise"], "n_images": 8, "n_boot": 50, "workers": 0,
                           "methods": ["gradient", "gradient_x_input", "lrp.epsilon_plus", "random"]}}


def own_model_params(data: str = "data") -> dict:
    raw = copy.deepcopy(yaml.safe_load((ROOT / "params.yaml").read_text()))
    raw["data"].update(dataset="imagefolder", root=f"{data}/images", size=SIDE, resize=SIDE, channels=3,
                       test_fraction=0.3, n_explain=3)
    raw["model"].update(source="torchvision", arch="resnet18", weights=f"{data}/resnet18.pt", normalize=IMAGENET,
                        random_labels_epochs=2, random_labels_lr=0.001, batch_size=16, zoo=[], workers=0)
    raw["controls"] = {"cascading": True, "independent": False, "layers": ["fc", "layer4"]}
    raw["patterns"] = {**raw["patterns"], "quality": False}  # rho(S) inverts 4608 x 4608 covariances: minutes
    raw["explain"].update(methods=GRADIENT_METHODS + EXTRA_METHODS, chunk=3, batch_size=3, batch_sizes={}, workers=0,
                          samples={},
                          method_params={"integrated_gradients": {"n_steps": 8},
                                         "smoothgrad": {"n_samples": 4, "noise_level": 0.15},
                                         "taylor": {"n_steps": 4}})
    raw["autoencoder"].update(epochs=1)
    raw["maximize"] = {**raw["maximize"], "models": ["trained"], "parameterizations": ["pixels"],
                       "pixels": {"lr": 0.1, "n_steps": 5}}
    raw["score"].update(models=["trained"], region=8, orders=["morf"], perturbations=["uniform"],
                        faithfulness=False, workers=0)
    raw["invariance"]["enabled"] = False
    raw["roar"].update(methods=["gradient", "random"], fills=["mean"], fractions=[0.5], repeats=1, epochs=1,
                       workers=0, method_params={})
    raw["analysis"] = {**raw["analysis"], **TINY_ANALYSIS}
    return raw


def build_and_run(proj: Path, runner: str = "xaicore") -> None:
    """A copy of the project (its code and dvc.yaml) in ``proj`` with data/images, data/resnet18.pt and the
    params; then the survey: the survey flow (``python -m flows survey``) followed by ``dvc commit`` of what it
    wrote, ``runner="dvc"``: ``dvc repro`` against one Prefect server, ``runner="xaicore"`` (the default):
    ``xaicore survey``, which also versions data/ with DVC; then ``dvc status``, which must find
    the pipeline up to date. Raises ``RuntimeError`` with the failing command's output."""
    proj.mkdir(parents=True, exist_ok=True)
    for sub in ("flows", "tasks", "xaicore"):
        shutil.copytree(ROOT / sub, proj / sub, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", proj / "dvc.yaml")
    write_images(proj / "data" / "images")
    write_resnet18(proj / "data" / "resnet18.pt")
    (proj / "params.yaml").write_text(yaml.safe_dump(own_model_params()))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
           "PREFECT_HOME": str(proj / ".prefect"), "PYTHONPATH": str(proj), "DVC_NO_ANALYTICS": "1"}

    def run(*args: str, timeout: int = 300) -> str:
        res = subprocess.run([sys.executable, *args], cwd=proj, env=env, capture_output=True, text=True,
                             timeout=timeout)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited with {res.returncode}:\n{res.stdout[-2000:]}\n"
                               f"{res.stderr[-4000:]}")
        return res.stdout

    run("-m", "dvc", "init", "--no-scm", "-q")
    shutil.copytree(ROOT / ".dvc" / "plots", proj / ".dvc" / "plots", dirs_exist_ok=True)  # dvc.yaml's template
    run("-m", "dvc", "config", "cache.type", "hardlink,symlink,copy")  # 45 MB a model: link, do not copy
    if runner == "xaicore":  # what a researcher types: versions data/ with DVC, then dvc repro under one server
        xaicore = Path(sys.executable).parent / "xaicore"
        res = subprocess.run([str(xaicore), "survey"], cwd=proj, env=env, capture_output=True, text=True,
                             timeout=1800)
        if res.returncode != 0:
            raise RuntimeError(f"xaicore survey exited with {res.returncode}:\n{res.stdout[-2000:]}\n"
                               f"{res.stderr[-4000:]}")
        (proj / "survey.log").write_text(res.stdout + res.stderr)
    elif runner == "dvc":
        run("flows/server.py", "dvc", "repro", timeout=1800)
    else:
        run("-m", "flows", "survey", timeout=1800)
        run("-m", "dvc", "commit", "-f", "-q")
    status = run("-m", "dvc", "status")
    if "up to date" not in status:
        raise RuntimeError(f"dvc status after the survey:\n{status}")
    if runner == "xaicore":
        experiment(proj, env)


#: what :func:`experiment` sets, and the stages it runs up to
EXPERIMENT = ("explain.method_params.smoothgrad.n_samples=8", "explain")


def experiment(proj: Path, env: dict[str, str]) -> None:
    """The project as a researcher keeps it, a git repository, and one DVC experiment on a method parameter:
    ``dvc exp run -S explain.method_params.smoothgrad.n_samples=8 explain`` (up to the explain stage). Its output
    goes to ``experiment.json`` for test_own_model.py; it runs here, in the background, because it takes a minute
    or two (the fit and explain stages' processes)."""
    import json

    git_env = {**env, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
               "GIT_COMMITTER_EMAIL": "t@t"}
    # what DVC writes in a git repository (dvc add's and the stages' outs; --no-scm wrote none) and the run's files
    (proj / ".gitignore").write_text("/outputs/\n/data/images\n/data/resnet18.pt\n/.prefect/\n/.numba_cache/\n"
                                     "/mlruns/\n*.log\n__pycache__/\n/experiment.json\n")
    steps = [["git", "init", "-q"], [sys.executable, "-m", "dvc", "config", "core.no_scm", "false"],
             ["git", "add", "-A"], ["git", "commit", "-q", "-m", "survey"],
             [sys.executable, "-m", "dvc", "exp", "run", "-S", *EXPERIMENT]]
    for cmd in steps:
        res = subprocess.run(cmd, cwd=proj, env=git_env, capture_output=True, text=True, timeout=900)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited with {res.returncode}:\n{res.stdout[-2000:]}\n"
                               f"{res.stderr[-3000:]}")
    (proj / "experiment.json").write_text(json.dumps({"output": res.stdout + res.stderr}))


def start_own_model_run(proj: Path, runner: str = "xaicore") -> tuple[subprocess.Popen, Path, Path]:
    """``python -m tests.flows.own_model proj runner`` in a child process of one torch thread, its output in a log
    beside ``proj``."""
    log = proj.parent / "own_model.log"
    proj.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "tests.flows.own_model", str(proj), runner], cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
                                stdout=fh, stderr=subprocess.STDOUT)
    return proc, proj, log


if __name__ == "__main__":
    torch.set_num_threads(1)
    build_and_run(Path(sys.argv[1]), *sys.argv[2:3])
