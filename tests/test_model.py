"""ModelConfig, the head registry, GeoModel (one backbone pass, masked fusion) and ClassifierModel."""

import json

import pytest
import torch

from geodemo.cells import build_grid
from geodemo.geo import XYStats, load_points_csv
from geodemo.heads import HEADS, TASKS, get_head, register_head
from geodemo.model import FUSIONS, ClassifierModel, GeoModel, ModelConfig, build_model

TINY = "test_efficientnet"


@pytest.fixture(scope="module")
def geo_kwargs(prior_csv):
    """cells + xy_stats so every geo task can be built (100 km grid over 300 prior points)."""
    lat, lon = load_points_csv(prior_csv)
    cells = build_grid(lat[:300], lon[:300], spacing_km=100.0)
    return {"cells": cells.to_dict(), "xy_stats": XYStats.fit(lat, lon).to_dict()}


def tiny(tasks, geo_kwargs, **kwargs) -> ModelConfig:
    return ModelConfig.for_backbone(TINY, tasks, **geo_kwargs, **kwargs)


def test_config_round_trips_through_json(geo_kwargs):
    config = tiny(list(TASKS), geo_kwargs, fusion="attention", tabular=["hour"], hidden_dim=16)
    again = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.image_size == 64 and again.num_cells == config.num_cells > 1


@pytest.mark.parametrize(
    "change, message",
    [
        ({"colour": 1}, "unknown config key.*colour"),
        ({"tasks": ["geocel"]}, "unknown task.*geocell, coords, region, heading"),
        ({"fusion": "max"}, "unknown fusion.*concat, mean, attention"),
        ({"backbone": "vgg"}, "unknown backbone.*tf_efficientnet_lite0"),
        ({"point_mode": "median"}, "unknown point_mode"),
        ({"tasks": ["classify"]}, "class_names"),
    ],
)
def test_config_refuses_bad_values_naming_them(geo_kwargs, change, message):
    d = tiny(["geocell"], geo_kwargs).to_dict()
    with pytest.raises(ValueError, match=message):
        ModelConfig.from_dict({**d, **change})


def test_head_registry_refuses_duplicates_and_lists_unknown():
    with pytest.raises(ValueError, match="already registered"):
        register_head("geocell")(torch.nn.Identity)
    with pytest.raises(ValueError, match="coords, geocell, heading, region"):
        get_head("altitude")


def test_the_model_reexports_the_head_registry():
    from geodemo import model

    assert model.HEADS is HEADS and model.TASKS is TASKS and model.get_head is get_head


@pytest.mark.parametrize("task", list(TASKS))
def test_each_head_alone(geo_kwargs, task):
    """Every registered head builds alone and returns exactly its declared outputs, (B, ...) or per view
    (B, V, ...)."""
    config = tiny([task], geo_kwargs)
    model = GeoModel(config).eval()
    out = model(torch.randn(2, 4, 3, 64, 64), torch.ones(2, 4, dtype=torch.bool))
    head = get_head(task)
    assert sorted(out) == sorted(head.outputs)
    last = {"geocell": config.num_cells, "coords": 2, "region": 21, "heading": 2, "heading_cardinal": 8}
    for key, value in out.items():
        assert value.shape[0] == 2 and value.shape[-1] == last[key]
        assert value.dim() == (3 if head.per_view else 2) and (not head.per_view or value.shape[1] == 4)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_embed_is_one_backbone_pass(geo_kwargs, fusion):
    model = GeoModel(tiny(["geocell", "heading"], geo_kwargs, fusion=fusion, hidden_dim=8)).eval()
    calls = []
    model.backbone.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    views = torch.randn(3, 4, 3, 64, 64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0], [0, 1, 0, 1]], dtype=torch.bool)
    assert model.embed(views).shape == (3, 4, model.backbone.num_features)
    assert calls == [12]
    out = model(views, mask)
    assert calls == [12, 7]  # only the 7 present views were computed, in one pass
    assert out["geocell"].shape == (3, model.config.num_cells)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_missing_views_never_change_the_output(geo_kwargs, fusion):
    model = GeoModel(tiny(["geocell", "region"], geo_kwargs, fusion=fusion)).eval()
    views = torch.randn(2, 4, 3, 64, 64)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 1, 0]], dtype=torch.bool)
    garbage = views.clone()
    garbage[~mask] = 100.0
    with torch.no_grad():
        a = model(views, mask)
        b = model(garbage, mask)
        feats = model.embed(views, mask)
        assert torch.equal(feats[~mask], torch.zeros_like(feats[~mask]))  # missing views are zeros
        if fusion != "concat":  # concat needs every slot; mean/attention also accept the view absent
            c = model.forward_features(feats[:, :3], mask[:, :3])
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
        if fusion != "concat":
            torch.testing.assert_close(a[key], c[key], rtol=0, atol=1e-6)


def test_region_head_takes_tabular_features(geo_kwargs):
    model = GeoModel(tiny(["region"], geo_kwargs, tabular=["hour", "month"])).eval()
    views, mask = torch.randn(2, 4, 3, 64, 64), torch.ones(2, 4, dtype=torch.bool)
    with torch.no_grad():
        with_tab = model(views, mask, tabular=torch.ones(2, 2))["region"]
        without = model(views, mask)["region"]
    assert with_tab.shape == without.shape == (2, 21) and not torch.equal(with_tab, without)


@pytest.mark.parametrize("cbam", [False, True])
def test_classifier_model(cbam):
    config = ModelConfig.for_backbone(TINY, ["classify"], class_names=["a", "b", "c"], cbam=cbam)
    model = build_model(config).eval()
    assert isinstance(model, ClassifierModel)
    assert model(torch.randn(2, 3, 64, 64))["classify"].shape == (2, 3)
    params = sum(p.numel() for p in model.parameters())
    assert params * 4 / 1e6 <= model.size_mb() < 5.0
