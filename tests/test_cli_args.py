"""Arguments: refused before torch loads, in one sentence, with exit 2; one home per training parameter (a
field added to TrainConfig shows in --help, the job form's checks and the checkpoint, nothing else edited)."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from geodemo import jobform, trainconfig
from geodemo.trainconfig import TrainConfig, param

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Times main() from the import of training.__main__ to its return, and says whether torch got imported.
# CPU seconds, not wall-clock: on a shared 2-core machine under load the wall clock measures the neighbours
# (torch's import alone costs 3-6 CPU seconds, so the bound still catches it).
PROBE = (
    "import sys, time, contextlib, io\n"
    "t = time.process_time()\n"
    "from training.__main__ import main\n"
    "err = io.StringIO()\n"
    "with contextlib.redirect_stderr(err):\n"
    "    try:\n"
    "        code = main(sys.argv[1:])\n"
    "    except SystemExit as done:\n"
    "        code = done.code\n"
    "print(code, round(time.process_time() - t, 3), 'torch' in sys.modules)\n"
    "print(err.getvalue().strip())\n"
)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["train", "--task", "multi", "--data", "d", "--out", "o", "--max-epochs", "banana"],
         "--max-epochs: invalid int value: 'banana'"),
        (["train", "--task", "multi", "--data", "d", "--out", "o", "--max-epochs", "0"],
         "--max-epochs 0 is out of range; it must be between 1 and"),
        (["evaluate", "--data", "d", "--out", "o.json", "--limit", "-3"],
         "--limit -3 is out of range; it must be at least 1"),
        (["train", "--task", "multi", "--data", "d", "--out", "o", "--temperature", "nan"],
         "--temperature nan is out of range"),
    ],
)
def test_bad_values_are_refused_within_2_s_without_torch(argv, words, tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO}
    r = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=120)
    (code, seconds, torch_loaded), err = r.stdout.splitlines()[0].split(), r.stdout.splitlines()[1]
    assert code == "2", r.stdout + r.stderr
    assert torch_loaded == "False", "torch was imported before the arguments were checked"
    assert float(seconds) < 2.0, f"took {seconds} CPU s to refuse {argv}"
    assert err.startswith("error:") and words in err and len(err.splitlines()) == 1, err


def test_help_lists_every_command_and_no_none_defaults():
    r = subprocess.run([sys.executable, "-m", "training", "--help"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0 and "embed" in r.stdout and "validate-data" in r.stdout
    r = subprocess.run([sys.executable, "-m", "training", "train", "--help"], cwd=REPO, capture_output=True,
                       text=True)
    assert r.returncode == 0 and "(default: None)" not in r.stdout
    assert "--haversine-tau-km" in r.stdout and "(default: 75.0)" in r.stdout  # generated from the field
    assert "multi" in r.stdout  # --task's choices are listed in the help


def test_defaults_are_the_recipe_and_accelerator_auto():
    from training.__main__ import build_parser
    from training.cliutil import config_from_args

    args = build_parser().parse_args(["train", "--task", "multi", "--data", "d", "--out", "o"])
    cfg = config_from_args(args)
    assert (cfg.haversine_tau_km, cfg.temperature, cfg.val_fraction, cfg.max_epochs) == (75.0, 0.57, 0.0, 50)
    assert not cfg.select_best and cfg.grid_spacing_km == 50.0 and cfg.fusion == "mean"
    assert args.accelerator == "auto" and args.prior is None  # None: train takes the shipped prior


def test_field_bounds_mirror_the_model_constants():
    from geodemo.model import POINT_MODES, TEMPERATURE_RANGE

    assert trainconfig.POINT_MODES == POINT_MODES and trainconfig.TEMPERATURE_RANGE == TEMPERATURE_RANGE


def _with_extra_field(monkeypatch):
    """TrainConfig plus one bounded field. A real new field is one line in geodemo/trainconfig.py; the test
    swaps a subclass in instead, also where a module bound the class's name at its import."""
    extended = dataclasses.make_dataclass(
        "TrainConfig", [("extra_widgets", int, param(3, "test-only widgets per location", low=1, high=7))],
        bases=(TrainConfig,),
    )
    monkeypatch.setattr(trainconfig, "TrainConfig", extended)
    for name in ("training.config", "training.tasks", "training.fit"):
        module = sys.modules.get(name) or __import__(name, fromlist=["TrainConfig"])
        monkeypatch.setattr(module, "TrainConfig", extended)
    return extended


def test_a_new_field_reaches_help_job_form_and_validation(monkeypatch, tmp_path):
    _with_extra_field(monkeypatch)
    from training.__main__ import build_parser, main

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    text = train.format_help()
    assert "--extra-widgets" in text and "test-only widgets per location" in text
    assert "between 1 and 7" in text
    with pytest.raises(SystemExit) as done:
        main(["train", "--task", "multi", "--data", "d", "--out", "o", "--extra-widgets", "9"])
    assert done.value.code == 2

    data = tmp_path / "data"
    data.mkdir()
    (data / "data.csv").write_text("uuid,latitude,longitude\nx,45.8,16.0\n")
    params = {"task": "multi", "backbone": "b", "datasets": [str(data)], "name": "r", "max_epochs": 2,
              "image_size": 0, "batch_size": 4, "lr": 1e-3, "unfreeze_epoch": -1, "accelerator": "cpu",
              "devices": 1}
    monkeypatch.setattr(jobform, "train_tasks", lambda: ("multi", "geocell"))
    with pytest.raises(jobform.JobError, match="^Extra widgets must be a whole number between 1 and 7"):
        jobform.train_args({**params, "extra_widgets": 9}, [data], tmp_path / "ckpts", backbones=("b",))
    args, _ = jobform.train_args({**params, "extra_widgets": 5}, [data], tmp_path / "ckpts", backbones=("b",))
    assert args[args.index("--extra-widgets") + 1] == "5"
    with pytest.raises(ValueError, match="extra_widgets 0 is out of range"):
        trainconfig.TrainConfig(extra_widgets=0).validate()


def test_a_new_field_is_saved_in_the_checkpoint(monkeypatch, sample_copy, tmp_path):
    _with_extra_field(monkeypatch)
    from training.__main__ import main

    data, out = sample_copy(6), tmp_path / "ckpt"
    code = main(["train", "--task", "geocell", "--data", str(data), "--out", str(out), "--backbone",
                 "test_efficientnet", "--pretrained", "none", "--image-size", "64", "--max-epochs", "1",
                 "--extra-widgets", "6", "--no-progress-bar", "--cache-dir", str(tmp_path / "cache")])
    assert code == 0
    assert json.loads((out / "config.json").read_text())["training"]["extra_widgets"] == 6
