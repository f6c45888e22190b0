"""The geocell read-out temperature (ModelConfig.temperature): Readout sharpens with T < 1 as worked out by
hand, T round-trips through a checkpoint, bad values are refused, `train --temperature` stores it."""

import dataclasses
import json
import math

import numpy as np
import pytest
from test_training_cli import cli

from geodemo.cells import build_grid
from geodemo.checkpoint import CheckpointError, load_checkpoint, read_config, save_checkpoint
from geodemo.geo import from_3765, haversine_km, load_points_csv, nearest_land
from geodemo.model import ModelConfig, build_model
from geodemo.readout import Readout

OSIJEK, DUBROVNIK = (45.55, 18.69), (42.65, 18.09)


@pytest.fixture(scope="module")
def config(prior_csv) -> ModelConfig:
    lat, lon = load_points_csv(prior_csv)
    return ModelConfig.for_backbone(
        "test_efficientnet", ["geocell"], cells=build_grid(lat, lon, spacing_km=50.0).to_dict()
    )


@pytest.fixture(scope="module")
def readouts(config) -> tuple[Readout, Readout]:
    return Readout(config), Readout(dataclasses.replace(config, temperature=0.5))


def _cell_near(readout: Readout, point) -> int:
    return int(haversine_km(*point, readout.cell_lat, readout.cell_lon).argmin())


def test_half_temperature_squares_and_renormalises_two_cells(readouts):
    plain, sharp = readouts
    a, b = _cell_near(plain, OSIJEK), _cell_near(plain, DUBROVNIK)
    p = np.zeros((1, len(plain.cell_lat)))
    p[0, a], p[0, b] = 0.6, 0.4
    # by hand: T = 0.5 -> p ** 2 = 0.36, 0.16 -> 9/13, 4/13
    r = sharp.read({"geocell": p}, "weighted_mean")
    np.testing.assert_allclose(r.cell_p[0, [a, b]], [9 / 13, 4 / 13], rtol=1e-12)
    assert r.cell_p[0].sum() == pytest.approx(1.0)
    lat, lon = nearest_land(*from_3765(np.array([(9 * sharp.cell_x[a] + 4 * sharp.cell_x[b]) / 13]),
                                       np.array([(9 * sharp.cell_y[a] + 4 * sharp.cell_y[b]) / 13])))
    assert haversine_km(lat[0], lon[0], r.lat[0], r.lon[0]) < 1e-6
    d = haversine_km(lat[0], lon[0], sharp.cell_lat[[a, b]], sharp.cell_lon[[a, b]])
    assert r.expected_km[0] == pytest.approx((9 * d[0] + 4 * d[1]) / 13, rel=1e-9)
    # the weighted mean moves towards the heavier cell (Osijek) than at T = 1 (both are snapped out of Bosnia)
    r1 = plain.read({"geocell": p}, "weighted_mean")
    assert haversine_km(*OSIJEK, r.lat[0], r.lon[0]) < haversine_km(*OSIJEK, r1.lat[0], r1.lon[0]) - 5
    np.testing.assert_allclose(r1.cell_p, p)  # T = 1 leaves the probabilities as they are


def test_min_expected_point_uses_the_tempered_distribution(readouts):
    plain, sharp = readouts
    p = np.random.default_rng(0).dirichlet(np.full(len(plain.cell_lat), 0.3), size=32)
    by_hand = p**2 / (p**2).sum(1, keepdims=True)
    risk = by_hand @ sharp._cand_km
    r = sharp.read({"geocell": p})
    np.testing.assert_allclose(r.expected_km, risk.min(1), rtol=1e-9)
    np.testing.assert_array_equal(r.lat, sharp.cand_lat[risk.argmin(1)])
    r1 = plain.read({"geocell": p})
    assert (r.lat != r1.lat).any()  # the point moves for some rows
    assert r.expected_km.mean() < r1.expected_km.mean()  # a sharper distribution expects a smaller error
    # credible regions are read from the tempered probabilities: they shrink
    assert Readout.credible_set(r.cell_p, 0.9).sum() < Readout.credible_set(r1.cell_p, 0.9).sum()


def test_round_trip_and_old_checkpoints_default_to_one(tmp_path, config):
    path = save_checkpoint(build_model(config), dataclasses.replace(config, temperature=0.6), tmp_path / "c")
    assert json.loads((path / "config.json").read_text())["temperature"] == 0.6
    assert read_config(path).temperature == 0.6
    _, loaded = load_checkpoint(path)
    assert loaded.temperature == 0.6 and Readout(loaded).config.temperature == 0.6
    d = json.loads((path / "config.json").read_text())
    del d["temperature"]  # a checkpoint from before the key existed
    (path / "config.json").write_text(json.dumps(d))
    assert read_config(path).temperature == 1.0


@pytest.mark.parametrize("bad", [0, 0.0, math.nan, -1.0, 25.0, "0.5", True])
def test_schema_refuses_bad_temperatures(tmp_path, config, bad):
    path = save_checkpoint(build_model(config), config, tmp_path / "c")
    d = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**d, "temperature": bad}))
    with pytest.raises(CheckpointError, match="temperature") as err:
        read_config(path)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="temperature"):
        dataclasses.replace(config, temperature=bad)


def test_cli_train_stores_the_temperature_and_refuses_zero(sample_dir, tmp_path, prior_csv):
    from test_training_cli import tiny_copy

    data = tiny_copy(sample_dir, tmp_path / "tiny", n=8)
    common = ["--task", "geocell", "--data", data, "--prior", prior_csv, "--backbone", "test_efficientnet",
              "--image-size", 64, "--max-epochs", 1, "--batch-size", 4, "--limit-train-batches", 1,
              "--limit-val-batches", 1, "--no-progress-bar", "--cache-dir", tmp_path / "cache"]
    r = cli("train", *common, "--out", tmp_path / "bad", "--temperature", 0)
    assert r.returncode == 2 and "temperature" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "bad" / "config.json").exists()
    ckpt = tmp_path / "ckpt"
    r = cli("train", *common, "--out", ckpt, "--temperature", 0.6)
    assert r.returncode == 0, r.stderr[-2000:]
    config = json.loads((ckpt / "config.json").read_text())
    assert config["temperature"] == 0.6 and config["training"]["temperature"] == 0.6
    out = tmp_path / "eval.json"
    r = cli("evaluate", "--checkpoint", ckpt, "--data", data, "--out", out, "--limit", 4)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(out.read_text())["count"] == 4
