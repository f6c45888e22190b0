"""Installable anywhere: the wheel, the console script, the data lookup, LFS coverage, no leftovers."""

import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import REPO

from geodemo import paths

# What a wheel is built from (a copy, so a build never writes into the checkout other tests read).
_NOT_PACKAGED = ("/.venv", "/.git", "/data", "/runs", "/jobs", "/labels", "/checkpoints", "/uploads", "/docs",
                 "/benchmarks", "/tests", "/build", "/dist")


def _pins(lines) -> list[str]:
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith(("#", "-r"))]


def test_pyproject_dependencies_are_the_runtime_requirements():
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime = _pins((REPO / "requirements.txt").read_text(encoding="utf-8").splitlines())
    assert project["dependencies"] == runtime
    assert "torch==2.14.1" in runtime and "torchvision==0.29.1" in runtime
    dev_only = {"pytest", "playwright", "ruff", "litdata"}
    assert not dev_only & {re.split(r"[=<>]", pin)[0] for pin in runtime}
    dev = (REPO / "requirements-dev.txt").read_text(encoding="utf-8")
    assert "-r requirements.txt" in dev and all(name in dev for name in dev_only)
    assert project["scripts"]["geodemo"] == "training.console:main"


def test_every_package_folder_is_packaged():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(init.parent.relative_to(REPO).parts) for top in ("geodemo", "training")
             for init in (REPO / top).rglob("__init__.py")}
    assert found <= listed, sorted(found - listed)


def test_gitattributes_covers_every_tracked_file_over_1_mb():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    big = [f for f in files.decode().split("\0") if f and (REPO / f).is_file()
           and (REPO / f).stat().st_size > 1_000_000]
    assert big, "expected the bundled checkpoint among the tracked files"
    attrs = subprocess.run(["git", "check-attr", "filter", "--", *big], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout
    uncovered = [line for line in attrs.splitlines() if not line.endswith(": filter: lfs")]
    assert not uncovered, uncovered


def test_sample_lookup_order(tmp_path, monkeypatch):
    monkeypatch.delenv(paths.SAMPLE_ENV, raising=False)
    assert paths.sample_candidates()[:2] == [REPO / "data" / "lumen-sample",
                                             REPO.parent / "shared" / "data" / "lumen-sample"]
    copy = tmp_path / "my-sample"
    monkeypatch.setenv(paths.SAMPLE_ENV, str(copy))
    with pytest.raises(paths.DataNotFound, match=r"GEODEMO_SAMPLE|fetch_sample"):
        paths.sample_dir()  # an explicit choice is the only place looked
    copy.mkdir()
    (copy / "data.csv").write_text("uuid,latitude,longitude\n", encoding="utf-8")
    assert paths.sample_dir() == copy.resolve()
    assert paths.prior_csv().is_file() and paths.prior_csv().is_relative_to(paths.ASSETS_DIR)


def test_no_sample_and_no_network_ends_in_one_sentence(tmp_path):
    env = {**os.environ, paths.SAMPLE_ENV: str(tmp_path / "missing")}
    done = subprocess.run(
        [sys.executable, "scripts/fetch_sample.py", "--if-missing", "--timeout", "5",
         "--base-url", "http://127.0.0.1:9/nowhere"],  # port 9 (discard): refused at once, like no network
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: the LUMEN sample")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "missing").exists()


def test_fetch_if_missing_is_a_no_op_when_the_sample_is_found(sample_dir):
    env = {**os.environ, paths.SAMPLE_ENV: str(sample_dir)}
    done = subprocess.run([sys.executable, "scripts/fetch_sample.py", "--if-missing",
                           "--base-url", "http://127.0.0.1:9/nowhere"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_scratch_folders_leave_nothing_behind(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    code = "from geodemo.paths import scratch_dir; p = scratch_dir('t'); (p / 'f').write_text('x'); print(p)"
    made = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          check=True).stdout.strip()
    assert made and not Path(made).exists() and not (tmp_path / "geodemo").exists()
    # a killed process cannot clean up: the next start sweeps its folder
    killed = subprocess.Popen([sys.executable, "-c", code + "; import time; time.sleep(60)"], cwd=REPO,
                              env=env, stdout=subprocess.PIPE, text=True)
    left = Path(killed.stdout.readline().strip())
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert left.exists()
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True, capture_output=True)
    assert not left.exists() and not (tmp_path / "geodemo").exists()


@pytest.mark.slow
def test_wheel_installs_and_predicts_outside_the_repository(tmp_path):
    src = tmp_path / "src"

    def ignore(folder, names):  # the top-level folders above; caches and build leftovers anywhere
        top = Path(folder) == REPO
        return [n for n in names if (top and f"/{n}" in _NOT_PACKAGED)
                or n in ("__pycache__", ".pytest_cache") or n.endswith(".egg-info")]

    shutil.copytree(REPO, src, ignore=ignore)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            str(src), "-w", str(tmp_path / "wheels")],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "wheels").glob("geodemo-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # the current environment's packages stay visible (offline and fast); the project itself is not on it
    import sysconfig

    Path(site, "current-env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                                "-q", str(wheel)], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr[-2000:]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", paths.SAMPLE_ENV)}
    env["GEODEMO_ENGINE"] = "torch"
    where = subprocess.run([str(python), "-c", "import geodemo.paths as p; print(p.ASSETS_DIR)"], cwd=outside,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(venv) and (Path(where) / "checkpoints" / "default").is_dir()
    script = venv / "bin" / "geodemo"
    helped = subprocess.run([str(script), "--help"], cwd=outside, env=env, capture_output=True, text=True,
                            timeout=300)
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "geodemo app" in helped.stdout and "evaluate" in helped.stdout
    preds = outside / "preds.csv"
    predicted = subprocess.run([str(script), "predict", "--data", str(Path(where) / "examples"), "--out",
                                str(preds)],
                               cwd=outside, env=env, capture_output=True, text=True, timeout=600)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    rows = preds.read_text(encoding="utf-8").splitlines()
    assert rows[0] == "uuid,latitude,longitude" and len(rows) == 4
    for row in rows[1:]:
        _, lat, lon = row.split(",")
        assert 42.0 < float(lat) < 46.6 and 13.4 < float(lon) < 19.5


def test_a_space_with_persistent_storage_keeps_its_folders_there(tmp_path, monkeypatch):
    from geodemo.ui import settings as settings_module

    for name in ("GEODEMO_LABELS_DIR", "GEODEMO_JOBS_DIR", "GEODEMO_CHECKPOINTS_DIR", "GEODEMO_UPLOADS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(settings_module, "SPACE_DATA", tmp_path)
    monkeypatch.delenv("SPACE_ID", raising=False)
    local = settings_module.Settings.from_env()
    assert not local.labels_dir.is_relative_to(tmp_path)
    monkeypatch.setenv("SPACE_ID", "someone/geodemo")
    space = settings_module.Settings.from_env()
    for folder in (space.labels_dir, space.jobs_dir, space.checkpoints_dir, space.uploads_dir):
        assert folder.is_relative_to(tmp_path / "geodemo"), folder
    monkeypatch.setenv("GEODEMO_LABELS_DIR", str(tmp_path / "mine"))
    assert settings_module.Settings.from_env().labels_dir == (tmp_path / "mine").resolve()
