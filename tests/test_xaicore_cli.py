"""The ``xaicore`` console script: --help everywhere, ``explain`` on image files, one line and status 2 on bad
input."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from xaicore import explain, methods
from xaicore.cli import main
from xaicore.heatmap_files import _read_image
from xaicore.models.io import save_model
from xaicore.models.zoo import build_model

COMMANDS = ["survey", "explain", "report", "methods", "schedule"]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_console_script_is_installed_and_has_help():
    exe = Path(sys.executable).with_name("xaicore")
    res = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert all(c in res.stdout for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    code, out, _ = run([command, "--help"], capsys)
    assert code == 0 and f"usage: xaicore {command}" in out


def test_methods_lists_every_registered_method(capsys):
    code, out, _ = run(["methods"], capsys)
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == methods()
    assert "[fitted on data]" in next(line for line in out.splitlines() if line.startswith("patternnet "))


@pytest.fixture(scope="module")
def model_and_images(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    model = build_model("cnn", (1, 28, 28), 10)
    save_model(model, d / "cnn.pt", arch="cnn", input_shape=(1, 28, 28), n_classes=10)
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((28, 28)) * 255).astype(np.uint8)).save(d / "a.png")
    Image.fromarray((rng.random((40, 36, 3)) * 255).astype(np.uint8)).save(d / "b.png")  # RGB, other size
    torch.save(model.state_dict(), d / "own.pt")  # a researcher's state_dict, no .json beside it
    return d, model.eval()


def test_explain_writes_a_heatmap_png_per_image_and_method(model_and_images, capsys):
    d, _ = model_and_images
    code, out, err = run(["explain", "--model", str(d / "cnn.pt"), "--method", "gradient", "--method",
                          "lrp.epsilon", "--out", str(d / "maps"), str(d / "a.png"), str(d / "b.png")], capsys)
    assert code == 0, err
    names = sorted(Path(p).name for p in out.split())
    assert names == ["a.gradient.png", "a.lrp.epsilon.png", "b.gradient.png", "b.lrp.epsilon.png"]
    assert all((d / "maps" / n).read_bytes()[:4] == b"\x89PNG" for n in names)


def test_images_are_read_as_the_model_sees_them(model_and_images):
    """Grey for a one-channel model, [0, 1]; another size: the shorter side scaled, the centre cropped."""
    d, model = model_and_images
    a = _read_image(d / "a.png", (1, 28, 28))
    assert torch.equal(a[0], torch.from_numpy(np.asarray(Image.open(d / "a.png"), dtype=np.float32) / 255.0))
    b = _read_image(d / "b.png", (1, 28, 28))
    ref = Image.open(d / "b.png").convert("L").resize((28, 31), Image.Resampling.BILINEAR).crop((0, 1, 28, 29))
    assert b.shape == (1, 28, 28) and torch.equal(b[0], torch.from_numpy(np.asarray(ref, np.float32) / 255.0))
    x = torch.stack([a, b])
    t = model(x).argmax(1)
    assert explain(model, x, t, "gradient").abs().sum() > 0


@pytest.mark.parametrize("argv, says", [
    (["explain", "--model", "{d}/cnn.pt", "--method", "no_such", "{d}/a.png"], "unknown method 'no_such'"),
    (["explain", "--model", "{d}/cnn.pt", "--method", "gradient", "{d}/nope.png"], "image {d}/nope.png not found"),
    (["explain", "--model", "{d}/cnn.pt", "--method", "gradient", "{d}/cnn.json"], "is not an image file"),
    (["explain", "--model", "{d}/cnn.pt", "--method", "gradient", "--target", "10", "{d}/a.png"],
     "target 10 is not a class of the model (0..9)"),
    (["explain", "--model", "{d}/cnn.pt", "--method", "patternnet", "{d}/a.png"], "pass --fit-data"),
    (["explain", "--model", "{d}/missing.pt", "--method", "gradient", "{d}/a.png"], "missing.pt"),
    (["explain", "--method", "gradient", "{d}/a.png"], "the following arguments are required: --model"),
    (["explain", "--model", "{d}/cnn.pt", "--method", "lime", "--param", "lime.n_sample=5", "{d}/a.png"],
     "lime has no parameter 'n_sample'; its parameters:"),
    (["explain", "--model", "{d}/cnn.pt", "--method", "lime", "--param", "gradcam.layer=x", "{d}/a.png"],
     "'gradcam' is not one of the --method given (lime)"),
    (["explain", "--model", "{d}/cnn.pt", "--method", "lime", "--param", "lime", "{d}/a.png"],
     "must be METHOD.KEY=VALUE"),
    (["explain", "--model", "{d}/cnn.pt", "--method", "gradient", "--class-names", "a,b", "{d}/a.png"],
     "--class-names gives 2 names, the model has 10 classes"),
    (["explain", "--model", "{d}/own.pt", "--method", "gradient", "{d}/a.png"],
     "for your own state_dict file name its architecture: --arch resnet18"),
    (["explain", "--model", "{d}/own.pt", "--arch", "resnet_nine", "--method", "gradient", "{d}/a.png"],
     "is not a torchvision.models architecture"),
    (["schedule", "every monday"], "is not a cron expression of 5 fields"),
    (["report", "--out", "{d}/no_outputs"], "metrics.json is missing"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_input_is_one_line_and_status_2(model_and_images, capsys, argv, says):
    d, _ = model_and_images
    code, _, err = run([a.format(d=d) for a in argv], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert says.format(d=d) in err and err.startswith("xaicore")


def test_survey_outside_the_project_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["survey"], capsys)
    assert code == 2 and "has no dvc.yaml and flows/" in err


ROOT = Path(__file__).resolve().parents[1]


def fake_project(tmp_path, params: str):
    (tmp_path / "flows").mkdir()
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "data.dvc").write_text("outs:\n- path: data/mnist\n")
    (tmp_path / "other.yaml").write_text(params)
    (tmp_path / "outputs" / "models").mkdir(parents=True)
    return tmp_path / "other.yaml"


def test_survey_checks_the_whole_params_file_before_dvc_runs(tmp_path, capsys, monkeypatch):
    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["model"]["wieghts"] = "x.pt"  # a typo
    other = fake_project(tmp_path, yaml.safe_dump(raw))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(subprocess, "call", lambda *a, **k: pytest.fail("dvc ran on a bad params file"))
    code, _, err = run(["survey", "--params", str(other)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"xaicore survey: error: {other}: model.wieghts") and "params.yaml" not in err
    assert (tmp_path / "outputs" / "models").is_dir()  # nothing deleted


def test_survey_runs_from_a_fresh_clone_without_data_mnist(tmp_path, capsys, monkeypatch):
    fake_project(tmp_path, (ROOT / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    calls = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(subprocess, "call", lambda cmd, **k: calls.append(cmd) or 0)
    stale = tmp_path / "outputs" / ".xaicore-resume" / "explain"
    stale.mkdir(parents=True)
    (stale / "job.npz").write_bytes(b"x")  # left by an interrupted run whose outputs DVC then restored
    code, _, err = run(["survey"], capsys)
    assert code == 0 and calls and calls[0][1:] == ["flows/server.py", "dvc", "repro"]
    assert (tmp_path / "data" / "mnist").is_dir()  # DVC tracks it: it must exist
    assert not stale.parent.exists() and "removed the journals of interrupted runs" in err


def test_survey_versions_the_researchers_own_data_under_data(tmp_path, capsys, monkeypatch):
    """Issue 29, point 5: an image folder and a weights file under data/ that no .dvc file tracks go into DVC's
    cache (``dvc add``) before ``dvc repro``; a second run leaves them be."""
    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update(dataset="imagefolder", root="data/shapes", size=32, channels=3)
    raw["model"].update(source="torchvision", arch="resnet18", weights="data/resnet18.pt")
    fake_project(tmp_path, "")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    (tmp_path / "data" / "shapes" / "disc").mkdir(parents=True)
    (tmp_path / "data" / "shapes" / "disc" / "0.png").write_bytes(b"png")
    (tmp_path / "data" / "resnet18.pt").write_bytes(b"weights")
    monkeypatch.chdir(tmp_path)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], check=True)
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd, **k: calls.append(cmd) or 0)
    code, _, err = run(["survey"], capsys)
    assert code == 0 and calls[0][1:] == ["flows/server.py", "dvc", "repro"]
    for name in ("shapes", "resnet18.pt"):
        spec = yaml.safe_load((tmp_path / "data" / f"{name}.dvc").read_text())
        assert spec["outs"][0]["path"] == name
        assert f"data/{name} is now versioned by DVC" in err
    assert len(list((tmp_path / ".dvc" / "cache").rglob("*"))) > 2  # the files are in DVC's cache
    code, _, err = run(["survey"], capsys)
    assert code == 0 and "versioned" not in err


def test_explain_takes_a_researchers_own_weights_method_params_and_class_names(tmp_path, capsys, monkeypatch):
    """Issue 29, point 9: a torchvision ResNet-18 state_dict with --arch, LIME mended with --param, the titles
    name the classes."""
    import torchvision

    import xaicore.heatmap_files as files

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "resnet18_shapes.pt")
    rng = np.random.default_rng(0)
    for name in ("s0", "s1"):
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(tmp_path / f"{name}.png")
    titles, calls = [], []
    registry = importlib.import_module("xaicore.explain")  # the package (xaicore.explain is also a function)
    real_png, real_explanation = files._heatmap_png, registry.explanation

    def spy(model, x, t, method, **kw):
        calls.append((method, kw))
        return real_explanation(model, x, t, method, **kw)

    monkeypatch.setattr(files, "_heatmap_png", lambda x, r, path, title: titles.append(title) or real_png(
        x, r, path, title))
    monkeypatch.setattr(registry, "explanation", spy)
    code, out, err = run(["explain", "--model", str(tmp_path / "resnet18_shapes.pt"), "--arch", "resnet18",
                          "--size", "32", "--mean", "0.485,0.456,0.406", "--std", "0.229,0.224,0.225",
                          "--class-names", "disc,bars,checks", "--method", "lime", "--method", "gradcam",
                          "--param", "lime.n_samples=80", "--param", "lime.features=grid", "--param", "lime.cell=8",
                          "--param", "gradcam.layer=layer3", "--out", str(tmp_path / "maps"),
                          str(tmp_path / "s0.png"), str(tmp_path / "s1.png")], capsys)
    assert code == 0, err
    assert len(out.split()) == 4
    assert dict(calls)["lime"] == {"n_samples": 80, "features": "grid", "cell": 8}
    assert dict(calls)["gradcam"] == {"layer": "layer3"}
    assert all(any(f"{c} (class " in t for c in ("disc", "bars", "checks")) for t in titles)
