"""``xaicore``: the survey and its parts from one command.

    xaicore survey [--params FILE]          the whole survey (``dvc repro``; another params file: the Prefect flow)
    xaicore explain --model W --method M IMAGE...   heatmap PNGs for a few images, no pipeline
    xaicore report [--params FILE]          figures and report.html from the archives
    xaicore methods                         the registered methods, with family and paper
    xaicore schedule CRON [--params FILE]   scheduled survey runs (dvc repro) under the project's Prefect server
    xaicore compare A B                     whether run B reproduced run A (outputs folders or git revisions)

Bad input ends with one line ``xaicore <command>: error: ...`` and exit status 2. The library stays free of
Prefect, DVC and MLflow: ``survey`` and ``schedule`` start the project's ``flows`` in a child process.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from xaicore.errors import XaiCoreError


class _Parser(argparse.ArgumentParser):
    """argparse with one line on bad usage (the usage itself is in ``--help``)."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _fail(command: str, message: str) -> NoReturn:
    print(f"xaicore {command}: error: {message}", file=sys.stderr)
    sys.exit(2)


def _project(command: str) -> Path:
    """The project folder (the one with dvc.yaml and flows/): the working directory."""
    root = Path.cwd()
    if not (root / "dvc.yaml").is_file() or not (root / "flows").is_dir():
        _fail(command, f"{root} has no dvc.yaml and flows/: run it in the xaicore project's folder")
    return root


def _child_env() -> dict[str, str]:
    """The environment for a child: this interpreter's bin first on PATH (dvc, prefect), threads as set."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def _tracked_data(root: Path) -> list[Path]:
    """The folders ``data.dvc`` tracks (``data/mnist``): DVC refuses to run while one is missing."""
    import yaml

    spec = root / "data.dvc"
    if not spec.is_file():
        return []
    outs = (yaml.safe_load(spec.read_text()) or {}).get("outs", [])
    return [root / o["path"] for o in outs if isinstance(o, dict) and "path" in o]


def _user_data(root: Path, cfg: Any) -> list[Path]:
    """The files and folders under ``data/`` that the params read (``data.root``, ``model.weights``,
    ``tabular.root``, ``text.root``) and no ``.dvc`` file versions yet."""
    data = (root / "data").resolve()
    named = [cfg.data.root if cfg.data.dataset in ("mnist", "imagefolder", "npz") else "", cfg.model.weights or "",
             cfg.tabular.root if cfg.tabular.dataset == "csv" else "",
             cfg.text.root if cfg.text.dataset == "textfile" else ""]
    tracked = [(p.parent / o["path"]).resolve() for p in data.rglob("*.dvc") if p.is_file()
               for o in (_dvc_outs(p))]
    tracked += [t.resolve() for t in _tracked_data(root)]
    out: list[Path] = []
    for name in dict.fromkeys(n for n in named if n):
        path = (root / name).resolve()
        if not path.exists() or not path.is_relative_to(data) or path == data:
            continue
        if any(path == t or path.is_relative_to(t) for t in tracked):
            continue
        out.append(path)
    return out


def _dvc_outs(spec: Path) -> list[dict[str, Any]]:
    import yaml

    try:
        outs = (yaml.safe_load(spec.read_text()) or {}).get("outs", [])
    except (yaml.YAMLError, AttributeError):
        return []
    return [o for o in outs if isinstance(o, dict) and "path" in o]


def cmd_survey(args: argparse.Namespace) -> int:
    from xaicore.config import load_config

    root = _project("survey")
    params = Path(args.params) if args.params is not None else root / "params.yaml"
    try:  # the whole params file, before DVC deletes any stage's outputs
        cfg = load_config(params)
    except XaiCoreError as e:
        _fail("survey", str(e))
    for folder in _tracked_data(root):  # a fresh clone has no data/mnist (git keeps no empty folder)
        if not folder.exists():
            folder.mkdir(parents=True)
    if args.params is None or Path(args.params).resolve() == (root / "params.yaml").resolve():
        for path in _user_data(root, cfg):  # the researcher's own data and weights: into DVC's cache
            rel = path.relative_to(root.resolve()).as_posix()
            done = subprocess.run([sys.executable, "-m", "dvc", "add", "-q", rel], cwd=root, env=_child_env(),
                                  capture_output=True, text=True)
            if done.returncode != 0:
                _fail("survey", f"dvc add {rel} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
            print(f"xaicore survey: {rel} is now versioned by DVC ({rel}.dvc; commit it with git, push the data "
                  "with dvc push)", file=sys.stderr)
        cmd = [sys.executable, "flows/server.py", "dvc", "repro"]  # DVC versions what it produces
    else:
        cmd = [sys.executable, "-m", "flows", "survey", "--params", args.params, "--out", args.out]
    print("xaicore survey: " + " ".join(cmd[1:]), file=sys.stderr)
    code = subprocess.call(cmd, cwd=root, env=_child_env())
    if code == 0:  # every stage is complete: journals of interrupted runs (restored from DVC's cache) are stale
        import shutil

        from xaicore.store.journal import RESUME_DIR

        stale = root / (args.out if cmd[-1] != "repro" else "outputs") / RESUME_DIR
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
            print(f"xaicore survey: removed the journals of interrupted runs ({stale}): every stage is complete",
                  file=sys.stderr)
    return code


def repro(project: str | Path, params: str = "params.yaml", out: str = "outputs") -> Path:
    """One scheduled survey run in ``project``: ``dvc repro`` (unchanged stages are skipped), or the survey flow
    for a params file other than params.yaml; its output goes to ``<out>/.scheduled/<UTC start>.log``, whose path
    is returned. Raises naming the log and its last line when the run fails."""
    import datetime

    root = Path(project)
    if (root / params).resolve() == (root / "params.yaml").resolve():
        cmd = [sys.executable, "-m", "dvc", "repro"]
    else:
        cmd = [sys.executable, "-m", "flows", "survey", "--params", params, "--out", out]
    log = root / out / ".scheduled" / f"{datetime.datetime.now(datetime.UTC):%Y%m%dT%H%M%SZ}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        fh.write("$ " + " ".join(cmd[1:]) + "\n")
        fh.flush()
        code = subprocess.call(cmd, cwd=root, env=_child_env(), stdout=fh, stderr=subprocess.STDOUT)
    if code != 0:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        raise XaiCoreError(f"the scheduled survey ({' '.join(cmd[1:])}) exited with {code}; see {log}: "
                           f"{lines[-1] if lines else ''}")
    return log


_CRON_FIELD = re.compile(r"^[0-9A-Za-z*?,/#LW-]+$")


def cmd_schedule(args: argparse.Namespace) -> int:
    from xaicore.config import load_config

    root = _project("schedule")
    if (args.cron is None) == (args.every is None):
        _fail("schedule", "give a cron schedule (e.g. '0 3 * * 1') or --every SECONDS, not both")
    if args.cron is not None:
        fields = args.cron.split()
        if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
            _fail("schedule", f"{args.cron!r} is not a cron expression of 5 fields (minute hour day month weekday), "
                              "e.g. '0 3 * * 1' for Mondays at 03:00")
        when = ["--cron", args.cron]
    else:
        if not args.every > 0:
            _fail("schedule", f"--every must be a positive number of seconds, got {args.every}")
        when = ["--every", str(args.every)]
    try:
        load_config(root / args.params)
    except XaiCoreError as e:
        _fail("schedule", str(e))
    # the project's local Prefect server with its scheduler, which turns the deployment's schedule into runs
    cmd = [sys.executable, "flows/server.py", "--scheduler", sys.executable, "-m", "flows.schedule", *when,
           "--params", args.params, "--out", args.out]
    return subprocess.call(cmd, cwd=root, env=_child_env())


def cmd_methods(args: argparse.Namespace) -> int:
    from xaicore.explain import get_explainer, methods

    rows = [(m, get_explainer(m)) for m in methods()]
    width = max(len(m) for m, _ in rows)
    for m, ex in rows:
        fitted = " [fitted on data]" if ex.fit is not None else ""
        print(f"{m:<{width}}  {ex.family:<12} {ex.paper}{fitted}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from xaicore.config import load_config
    from xaicore.outputs import Paths
    from xaicore.report.html import write_html_report

    load_config(args.params)  # a bad params file is refused before anything is read
    paths = Paths(Path(args.out))
    page = write_html_report(paths, progress=True)
    print(page)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from xaicore.heatmap_files import explain_images, parse_method_params

    for p in args.images:
        if not Path(p).is_file():
            _fail("explain", f"image {p} not found")
    try:
        params = parse_method_params(args.param or [], args.method)
        names = [n.strip() for n in args.class_names.split(",")] if args.class_names else None
        mean = [float(v) for v in args.mean.split(",")] if args.mean else None
        std = [float(v) for v in args.std.split(",")] if args.std else None
    except ValueError as e:
        _fail("explain", f"--mean/--std take comma-separated numbers ({e})")

    for p in explain_images(args.model, args.method, args.images, args.out, target=args.target,
                            fit_data=args.fit_data, arch=args.arch, size=args.size, channels=args.channels,
                            mean=mean, std=std, class_names=names, method_params=params):
        print(p)
    return 0


def _materialise(arg: str, tmp: Path) -> Path:
    """An outputs folder: ``arg`` itself, or the ``outputs/`` of git revision ``arg`` of the project in the working
    directory, fetched by ``dvc get`` (a child process: the library stays free of DVC) into ``tmp``."""
    if Path(arg).is_dir():
        return Path(arg)
    root = _project("compare")
    env = _child_env()
    rev = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{arg}^{{commit}}"], cwd=root, env=env,
                         capture_output=True, text=True)
    if rev.returncode != 0:
        _fail("compare", f"{arg} is neither an outputs folder nor a git revision of {root}")
    out = tmp / rev.stdout.strip()[:12] / "outputs"
    print(f"xaicore compare: dvc get . outputs --rev {arg}", file=sys.stderr)
    got = subprocess.run(["dvc", "get", ".", "outputs", "--rev", arg, "-o", str(out)], cwd=root, env=env,
                         capture_output=True, text=True)
    if got.returncode != 0 or not out.is_dir():
        lines = [ln.strip() for ln in got.stderr.splitlines() if ln.strip()]
        why = next((ln for ln in lines if ln.startswith("ERROR")), lines[0] if lines else "no outputs/ came back")
        _fail("compare", f"cannot fetch the outputs of revision {arg} with dvc get: {why}")
    return out


def cmd_compare(args: argparse.Namespace) -> int:
    import tempfile

    from xaicore.compare import compare_runs

    if not args.tolerance_scale > 0:
        _fail("compare", f"--tolerance-scale must be positive, got {args.tolerance_scale}")
    with tempfile.TemporaryDirectory(prefix="xaicore-compare-") as tmp:
        a, b = _materialise(args.a, Path(tmp)), _materialise(args.b, Path(tmp))
        result = compare_runs(a, b, tolerance_scale=args.tolerance_scale)
        print(result.format())
    return 0 if result.reproduced else 1


def _params_and_out(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", default="params.yaml", help="the survey's configuration (default: params.yaml)")
    p.add_argument("--out", default="outputs", help="the survey's output folder (default: outputs)")


def parser() -> argparse.ArgumentParser:
    """The ``xaicore`` command line."""
    p = _Parser(prog="xaicore", description="The heatmapping survey (Gradient, LRP, Grad-CAM, LIME, occlusion, "
                "..., their sanity checks and metrics) as one reproducible pipeline.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    s = sub.add_parser("survey", help="run the whole survey (dvc repro)",
                       description="Run every stage of the survey with `dvc repro` in this project folder; "
                                   "stages whose inputs did not change are skipped. With --params FILE other than "
                                   "params.yaml, the same stages run as one Prefect flow (not versioned by DVC).")
    s.add_argument("--params", help="a params file other than params.yaml (default: params.yaml, with DVC)")
    s.add_argument("--out", default="outputs", help="output folder with --params (default: outputs)")
    s.set_defaults(fn=cmd_survey)
    e = sub.add_parser("explain", help="heatmap PNGs for a few images, no pipeline",
                       description="Explain image files with a saved model: one PNG per image and method, "
                                   "<out>/<image>.<method>.png, input beside a red (+) / blue (-) heatmap.")
    e.add_argument("--model", required=True, help="model weights: one the survey saved (.pt with its .json "
                   "beside it, e.g. outputs/models/trained.pt), or your own state_dict file with --arch")
    e.add_argument("--arch", help="your network's architecture: a torchvision name (resnet18) or a builder "
                   "(my_module:build, nets/my_net.py:build); --model is then its state_dict file")
    e.add_argument("--size", type=int, default=224, help="with --arch: the side of the square images it takes "
                   "(default 224)")
    e.add_argument("--channels", type=int, default=3, choices=(1, 3), help="with --arch: 3 (RGB, default) or 1")
    e.add_argument("--mean", help="with --arch: the normalization in front of the network, comma-separated per "
                   "channel (e.g. 0.485,0.456,0.406); heatmaps stay on the pixels")
    e.add_argument("--std", help="with --arch: the normalization's std, comma-separated per channel")
    e.add_argument("--class-names", help="comma-separated class names for the titles (with --arch: also the "
                   "number of classes; default: read from the weights' classifier)")
    e.add_argument("--param", action="append", metavar="METHOD.KEY=VALUE", help="a method parameter, repeatable: "
                   "lime.n_samples=500, lime.features=grid, gradcam.layer=layer3, lrp.epsilon.epsilon=0.1")
    e.add_argument("--method", required=True, action="append", help="a method (repeat for several); "
                   "see `xaicore methods`")
    e.add_argument("--target", type=int, help="class to explain (default: the model's prediction)")
    e.add_argument("--out", default="heatmaps", help="folder for the PNGs (default: heatmaps)")
    e.add_argument("--fit-data", help="a saved dataset.npz to fit methods that need it (patternnet, pda, cem)")
    e.add_argument("images", nargs="+", metavar="IMAGE", help="PNG/JPEG files (resized to the model's input)")
    e.set_defaults(fn=cmd_explain)
    r = sub.add_parser("report", help="figures and report.html from the archives",
                       description="Redraw the figures and outputs/report.html from the survey's archives "
                                   "(heatmaps.zarr, scores.zarr, roar.zarr, metrics.json).")
    _params_and_out(r)
    r.set_defaults(fn=cmd_report)
    m = sub.add_parser("methods", help="list the registered methods",
                       description="Every method name xaicore.explain accepts, with its family and paper.")
    m.set_defaults(fn=cmd_methods)
    c = sub.add_parser("schedule", help="run the survey on a cron schedule (Prefect deployment)",
                       description="Serve the survey as a Prefect deployment that runs on CRON, e.g. "
                                   "'0 3 * * 1' (Mondays 03:00), or --every SECONDS. It starts the project's local "
                                   "Prefect server with its scheduler (.prefect/server.log); each run is `dvc repro` "
                                   "(unchanged stages skipped; another --params file: the survey flow), its output "
                                   "in <out>/.scheduled/<start>.log and in the run's Prefect logs. Stops with "
                                   "Ctrl-C.")
    c.add_argument("cron", metavar="CRON", nargs="?", help="cron expression, 5 fields")
    c.add_argument("--every", type=float, metavar="SECONDS", help="an interval schedule instead of CRON")
    _params_and_out(c)
    c.set_defaults(fn=cmd_schedule)
    k = sub.add_parser("compare", help="whether run B reproduced run A (exit 0) or not (exit 1)",
                       description="Compare two survey outputs: per archive variable the largest absolute and "
                                   "relative difference against its stated tolerance (xaicore.tolerances.TOLERANCES), "
                                   "per metric the methods' rank agreement (Kendall tau), each finding's verdict "
                                   "side by side. Exit 0: reproduced; 1: a verdict changed or a difference exceeds "
                                   "its tolerance. A or B may be a git revision: its outputs/ is fetched with "
                                   "`dvc get` (run it in the project's folder).")
    k.add_argument("a", metavar="A", help="the reference: an outputs folder or a git revision (e.g. HEAD~1)")
    k.add_argument("b", metavar="B", help="the run to check: an outputs folder or a git revision")
    k.add_argument("--tolerance-scale", type=float, default=1.0, metavar="K",
                   help="multiply every tolerance by K (default: 1)")
    k.set_defaults(fn=cmd_compare)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``xaicore`` console script."""
    args = parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except XaiCoreError as err:
        _fail(args.command, str(err))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
