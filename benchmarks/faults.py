"""Faults: kill -9 the app mid-label-write and a training job (resume), unwritable labels, huge CSV.

    python benchmarks/faults.py [--only app,train,disk,csv] [--rounds 3] [--epochs 5]

(a) app: clients label in a loop against `python app.py`; the server gets SIGKILL at a random moment;
    the dataset must validate and hold every row whose /label returned (plus at most the rows in flight).
    Repeated --rounds times on the same labels folder, restarting the app each time.
(b) train: `python -m training train` (tiny budget, 10-location copy of the sample) is SIGKILLed once the
    first epoch's last.ckpt appears, then the same command is rerun: it must resume from last.ckpt and end
    with the same metrics and weights as an uninterrupted run with the same seed.
(c) disk: a read-only (chmod, or EROFS simulated when running as root) and a full (ENOSPC) labels folder:
    /label through the real app gives one sentence, and nothing stored is lost.
(d) csv: `validate-data` on a 200,000-row data.csv: time, exit code, output size.
JSON to benchmarks/results/faults.json, markdown to stdout.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from load_test import PRIOR, RESULTS, ROOT, SAMPLE, App, locations, machine, pick_checkpoint

# ---------------------------------------------------------------------------------------------- (a)


def kill_app(work: Path, checkpoint: Path, rounds: int, clients: int, seed: int) -> dict:
    """SIGKILL the app while `clients` threads label in a loop; check the dataset after each round."""
    from gradio_client import Client, handle_file

    from geodemo.data import read_locations
    from geodemo.validate import validate_dataset

    rng = random.Random(seed)
    labels = work / "labels"
    views = locations(8)
    returned: list[str] = []
    out = {"rounds": []}
    for r in range(rounds):
        app = App(work, checkpoint, labels=labels)
        stop = threading.Event()
        got, errors = [], []

        def loop(i):
            client = Client(app.url, verbose=False)
            n = 0
            while not stop.is_set():
                north, east, _, _ = views[(i + n) % len(views)]
                try:
                    res = client.predict(
                        handle_file(north),
                        handle_file(east),
                        None,
                        None,
                        45.2 + 0.001 * n,
                        15.6 + 0.1 * i,
                        api_name="/label",
                    )
                    got.append(res["uuid"])
                except Exception as exc:  # noqa: BLE001 - expected once the server is killed
                    errors.append(type(exc).__name__)
                    if stop.is_set() or app.proc.poll() is not None:
                        return
                n += 1

        threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(clients)]
        for t in threads:
            t.start()
        delay = rng.uniform(4.0, 9.0)
        time.sleep(delay)
        app.kill(signal.SIGKILL)
        stop.set()
        for t in threads:
            t.join(60)
        returned += got
        frame = read_locations(labels)
        stored = set(frame.uuid)
        report = validate_dataset(labels)
        out["rounds"].append(
            {
                "killed_after_s": round(delay, 2),
                "labels_returned_this_round": len(got),
                "client_errors_after_kill": len(errors),
                "stored_rows": len(frame),
                "validates": report.ok,
                "unique": bool(frame.uuid.is_unique),
                "returned_all_stored": set(returned) <= stored,
                "stored_not_returned": len(stored - set(returned)),
                "orphan_image_folders": sum(1 for d in (labels / "images").iterdir() if d.name not in stored),
                "app_start_s": round(app.start_s, 1),
            }
        )
    # the server comes back on the crash-left folder and still takes labels
    app = App(work, checkpoint, labels=labels)
    try:
        north = views[0][0]
        Client(app.url, verbose=False).predict(
            handle_file(north), None, None, None, 45.3, 15.7, api_name="/label"
        )
        out["restart_then_label_ok"] = True
    except Exception as exc:  # noqa: BLE001
        out["restart_then_label_ok"] = f"{type(exc).__name__}: {exc}"
    finally:
        app.kill(signal.SIGTERM)
    rounds_ = out["rounds"]
    out["ok"] = all(x["validates"] and x["unique"] and x["returned_all_stored"] for x in rounds_) and (
        out["restart_then_label_ok"] is True
    )
    return out


# ---------------------------------------------------------------------------------------------- (b)


def small_copy(dest: Path, n: int = 10) -> Path:
    """The first n sample locations: data.csv rows + copied image folders (symlinks out are refused)."""
    from geodemo.data import images_dir, read_locations

    frame = read_locations(SAMPLE).head(n)
    (dest / "images").mkdir(parents=True)
    for uid in frame.uuid:
        shutil.copytree(images_dir(SAMPLE) / uid, dest / "images" / uid)
    frame.to_csv(dest / "data.csv", index=False)
    return dest


def _train_cmd(data: Path, out: Path, epochs: int, cache: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "training",
        "train",
        "--task",
        "multi",
        "--data",
        str(data),
        "--out",
        str(out),
        "--backbone",
        "test_efficientnet",
        "--image-size",
        "64",
        "--batch-size",
        "2",
        "--max-epochs",
        str(epochs),
        "--seed",
        "7",
        "--accelerator",
        "cpu",
        "--devices",
        "1",
        "--no-progress-bar",
        "--cache-dir",
        str(cache),
        "--prior",
        str(PRIOR),
        "--progress-file",
        str(out.parent / f"{out.name}.progress.json"),
    ]


def _run(cmd, log: Path) -> tuple[int, float, str]:
    start = time.perf_counter()
    with open(log, "w") as fh:
        code = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=_env()).returncode
    return code, time.perf_counter() - start, log.read_text()


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}


def _result(out: Path) -> tuple[dict, dict]:
    """(metrics without timings, {tensor name: array}) of a finished checkpoint."""
    from safetensors.numpy import load_file

    metrics = json.loads((out / "config.json").read_text())["metrics"]
    metrics = {k: v for k, v in metrics.items() if k not in ("train_seconds", "cache")}
    return metrics, load_file(out / "model.safetensors")


def kill_training(work: Path, epochs: int, no_cache: bool) -> dict:
    """Uninterrupted run vs a run killed after epoch 0's last.ckpt and rerun with the same command."""
    data = small_copy(work / "data10")
    cache = work / "cache"
    extra = ["--no-cache"] if no_cache else []
    ref_out, kill_out = work / "ref", work / "killed"
    code, ref_s, _ = _run(_train_cmd(data, ref_out, epochs, cache) + extra, work / "ref.log")
    if code:
        return {"ok": False, "error": f"uninterrupted run failed ({code}); see {work / 'ref.log'}"}

    cmd = _train_cmd(data, kill_out, epochs, cache) + extra
    last = kill_out / "lightning" / "last.ckpt"
    with open(work / "killed-1.log", "w") as fh:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=_env(), start_new_session=True
        )
        while proc.poll() is None and not last.exists():
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    progress = json.loads((work / "killed.progress.json").read_text() or "{}")
    killed_at = {
        "epoch": progress.get("epoch"),
        "step": progress.get("step"),
        "finished_before_kill": (kill_out / "config.json").exists(),
        "returncode": proc.returncode,
    }
    code, resume_s, log = _run(cmd, work / "killed-2.log")
    if code:
        return {"ok": False, "error": f"resumed run failed ({code}); see {work / 'killed-2.log'}"}
    ref_metrics, ref_weights = _result(ref_out)
    res_metrics, res_weights = _result(kill_out)
    diff = max(float(np.abs(ref_weights[k] - res_weights[k]).max()) for k in ref_weights)
    same_metrics = ref_metrics.keys() == res_metrics.keys() and all(
        np.isclose(ref_metrics[k], res_metrics[k], rtol=1e-6, atol=1e-9)
        for k in ref_metrics
        if isinstance(ref_metrics[k], (int, float))
    )
    return {
        "command": " ".join(cmd[1:]).replace(str(work), "$TMP"),
        "epochs": epochs,
        "embedding_cache": not no_cache,
        "killed_at": killed_at,
        "resumed_from_last": "resuming from" in log,
        "uninterrupted": {"seconds": round(ref_s, 1), "metrics": ref_metrics},
        "resumed": {"seconds": round(resume_s, 1), "metrics": res_metrics},
        "identical_metrics": bool(same_metrics),
        "max_abs_weight_diff": diff,
        "ok": bool(same_metrics and "resuming from" in log and not killed_at["finished_before_kill"]),
    }


# ---------------------------------------------------------------------------------------------- (c)


def unwritable(work: Path, checkpoint: Path) -> dict:
    """A read-only and a full labels folder, through the real app (in this process, so the OS error
    can be simulated when running as root, where chmod does not stop writes)."""
    from app_fixtures import free_port
    from gradio_client import Client, handle_file

    from geodemo import labels as labels_module
    from geodemo.data import read_locations
    from geodemo.ui import build_app, launch
    from geodemo.ui.settings import Settings
    from geodemo.validate import validate_dataset

    settings = Settings(
        default_checkpoint=checkpoint,
        labels_dir=work / "labels_c",
        jobs_dir=work / "jobs_c",
        checkpoints_dir=work / "ckpts_c",
        data_roots=[SAMPLE, work / "labels_c"],
    )
    demo = build_app(settings)
    port = free_port()
    launch(demo, server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    client = Client(f"http://127.0.0.1:{port}", verbose=False)
    view = handle_file(locations(1)[0][0])
    labels = settings.labels_dir
    for _ in range(3):
        client.predict(view, None, None, None, 45.8, 15.9, api_name="/label")
    out = {"running_as_root": os.geteuid() == 0, "cases": {}}
    real_replace, real_fsync = os.replace, os.fsync

    def failing(real, code, target_arg):
        def fake(*args, **kwargs):
            if target_arg is None or str(args[target_arg]).startswith(str(labels)):
                raise OSError(code, os.strerror(code))
            return real(*args, **kwargs)

        return fake

    try:
        for case, code in (("read-only", errno.EROFS), ("full disk", errno.ENOSPC)):
            before = (labels / "data.csv").read_bytes()
            folders = sorted(p.name for p in (labels / "images").iterdir())
            how = "simulated"
            if case == "read-only" and os.geteuid() != 0:
                for d in (labels, labels / "images"):
                    d.chmod(0o555)
                how = "chmod 0555"
            elif case == "read-only":
                labels_module.os.replace = failing(real_replace, code, -1)
                how = "os.replace raises EROFS"
            else:
                labels_module.os.fsync = failing(real_fsync, code, None)
                how = "fsync raises ENOSPC"
            try:
                client.predict(view, None, None, None, 45.8, 15.9, api_name="/label")
                message = None
            except Exception as exc:  # noqa: BLE001 - the message is the measurement
                message = str(exc)
            finally:
                labels_module.os.replace, labels_module.os.fsync = real_replace, real_fsync
                for d in (labels, labels / "images"):
                    d.chmod(0o755)
            served = client.predict(view, None, None, None, api_name="/predict")
            out["cases"][case] = {
                "how": how,
                "message": message,
                "one_sentence": bool(message) and "\n" not in message and "Traceback" not in message,
                "data_csv_unchanged": (labels / "data.csv").read_bytes() == before,
                "no_new_image_folder": sorted(p.name for p in (labels / "images").iterdir()) == folders,
                "validates": validate_dataset(labels).ok,
                "rows": len(read_locations(labels)),
                "still_serving_predict": 42 < served["latitude"] < 47,
            }
        client.predict(view, None, None, None, 45.8, 15.9, api_name="/label")
        out["label_after_recovery_rows"] = len(read_locations(labels))
    finally:
        demo.geodemo_jobs.shutdown()
        demo.close()
    out["ok"] = (
        all(
            c["one_sentence"] and c["data_csv_unchanged"] and c["no_new_image_folder"] and c["validates"]
            for c in out["cases"].values()
        )
        and out["label_after_recovery_rows"] == 4
    )
    return out


# ---------------------------------------------------------------------------------------------- (d)


def huge_csv(work: Path, rows: int) -> dict:
    """`validate-data` on a data.csv of `rows` rows whose image folders are missing (one problem each)."""
    import pandas as pd

    root = work / "huge"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "uuid": [f"loc-{i:07d}" for i in range(rows)],
            "latitude": rng.uniform(45.2, 45.8, rows).round(6),
            "longitude": rng.uniform(15.2, 16.2, rows).round(6),
        }
    )
    frame.to_csv(root / "data.csv", index=False)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "training", "validate-data", str(root)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=900,
    )
    seconds = time.perf_counter() - start
    lines = done.stdout.splitlines()
    return {
        "rows": rows,
        "csv_mb": round((root / "data.csv").stat().st_size / 2**20, 1),
        "seconds": round(seconds, 1),
        "exit_code": done.returncode,
        "stdout_lines": len(lines),
        "stdout_head": lines[:2] + [ln for ln in lines if "error(s)" in ln or "more problem" in ln],
        "stderr": done.stderr.strip()[-300:],
        "ok": done.returncode == 1 and len(lines) < 400 and not done.stderr.strip(),
    }


# ---------------------------------------------------------------------------------------------- report


def markdown(result: dict) -> str:
    lines = []
    if "app" in result:
        a = result["app"]
        lines += [
            "### (a) kill -9 the app mid-label-writes",
            "",
            "| round | killed after s | labels returned | rows stored | validates | all returned stored "
            "| stored, reply lost | orphan image folders |",
            "|---:|---:|---:|---:|---|---|---:|---:|",
        ]
        for i, r in enumerate(a["rounds"], 1):
            lines.append(
                f"| {i} | {r['killed_after_s']} | {r['labels_returned_this_round']} | {r['stored_rows']} | "
                f"{r['validates']} | {r['returned_all_stored']} | {r['stored_not_returned']} | "
                f"{r['orphan_image_folders']} |"
            )
        lines += [
            "",
            f"Restarted app takes a label on the crash-left folder: {a['restart_then_label_ok']}. "
            f"OK: **{a['ok']}**",
            "",
        ]
    if "train" in result:
        t = result["train"]
        lines += ["### (b) kill -9 a training job, rerun the same command", ""]
        if "error" in t:
            lines += [f"FAILED: {t['error']}", ""]
        else:
            keys = [
                k
                for k in t["uninterrupted"]["metrics"]
                if isinstance(t["uninterrupted"]["metrics"][k], float)
            ]
            lines += ["| run | seconds | " + " | ".join(keys) + " |", "|---|---:|" + "---:|" * len(keys)]
            for name in ("uninterrupted", "resumed"):
                m = t[name]["metrics"]
                lines.append(
                    f"| {name} | {t[name]['seconds']} | "
                    + " | ".join(f"{m.get(k, float('nan')):.6g}" for k in keys)
                    + " |"
                )
            lines += [
                "",
                f"Killed at epoch {t['killed_at']['epoch']} (step {t['killed_at']['step']}); resumed from "
                f"last.ckpt: {t['resumed_from_last']}; identical metrics: **{t['identical_metrics']}**; "
                f"max |weight difference|: {t['max_abs_weight_diff']:.3g}. OK: **{t['ok']}**",
                "",
            ]
    if "disk" in result:
        d = result["disk"]
        lines += [
            "### (c) unwritable labels folder, through the app",
            "",
            "| case | how | message | rows kept | no half-written folder | validates | still serving |",
            "|---|---|---|---|---|---|---|",
        ]
        for case, c in d["cases"].items():
            lines.append(
                f"| {case} | {c['how']} | {c['message']} | {c['data_csv_unchanged']} | "
                f"{c['no_new_image_folder']} | {c['validates']} | {c['still_serving_predict']} |"
            )
        lines += ["", f"OK: **{d['ok']}**", ""]
    if "csv" in result:
        c = result["csv"]
        lines += [
            "### (d) huge CSV",
            "",
            f"`validate-data` on {c['rows']:,} rows ({c['csv_mb']} MB): "
            f"{c['seconds']} s, exit {c['exit_code']}, {c['stdout_lines']} lines of output "
            f"({'; '.join(c['stdout_head'][2:])}). OK: **{c['ok']}**",
            "",
        ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="app,train,disk,csv", help="comma list of parts to run")
    parser.add_argument("--rounds", type=int, default=3, help="(a) app kills")
    parser.add_argument("--clients", type=int, default=3, help="(a) labelling clients")
    parser.add_argument("--epochs", type=int, default=5, help="(b) max epochs")
    parser.add_argument(
        "--no-cache", action="store_true", help="(b) train on images, not the embedding cache"
    )
    parser.add_argument("--csv-rows", type=int, default=200_000, help="(d) rows of the huge CSV")
    parser.add_argument(
        "--checkpoint", help="checkpoint dir for the app (default: bundled default, else tiny)"
    )
    parser.add_argument("--seed", type=int, default=0, help="kill timing seed")
    parser.add_argument("--out", type=Path, default=RESULTS / "faults.json", help="JSON to write")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    result = {"command": "python benchmarks/faults.py " + " ".join(sys.argv[1:]), "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="geodemo-faults-") as tmp:
        work = Path(tmp)
        checkpoint, described = pick_checkpoint(args.checkpoint, work)
        result["checkpoint"] = described
        if "app" in parts:
            result["app"] = kill_app(work, checkpoint, args.rounds, args.clients, args.seed)
        if "train" in parts:
            result["train"] = kill_training(work, args.epochs, args.no_cache)
        if "disk" in parts:
            result["disk"] = unwritable(work, checkpoint)
        if "csv" in parts:
            result["csv"] = huge_csv(work, args.csv_rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str))
    print(markdown(result))
    return 0 if all(result[p].get("ok") for p in parts if p in result) else 1


if __name__ == "__main__":
    sys.exit(main())
