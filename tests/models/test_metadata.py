"""Metadata encoders on known points, the MLP encoder, fusion, the spec and layout check, the masking schedule."""

from __future__ import annotations

import json

import pytest
import torch

from taxotrain.models.metadata import (
    MetadataEncoder,
    MetadataError,
    check_layout,
    create_fusion,
    create_metadata_encoder,
    list_fusions,
    list_metadata_encoders,
)
from taxotrain.models.metadata_masking import MetadataMasking

RAW = {"place": torch.tensor([[48.85, 2.35], [-33.9, 151.2], [90.0, 10.0], [0.0, -180.0]]),
       "date": torch.tensor([[1.0], [172.0], [365.0], [366.0]]),
       "hour": torch.tensor([[0.0], [6.5], [12.0], [23.9]]),
       "elevation": torch.tensor([[0.0], [35.0], [2400.0], [-400.0]])}


def _features(name: str, rows: list[list[float]], **options: object) -> torch.Tensor:
    return create_metadata_encoder(name, **options)(torch.tensor(rows, dtype=torch.float32))


def _dist(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm())


def test_the_four_encoders_are_registered() -> None:
    assert {"place", "date", "hour", "elevation"} <= set(list_metadata_encoders())
    assert {"concat", "film"} <= set(list_fusions())


@pytest.mark.parametrize("name", list_metadata_encoders())
def test_every_encoder_zeroes_masked_and_missing_records_and_keeps_the_others(name: str) -> None:
    enc = create_metadata_encoder(name)
    values = RAW[name].clone()
    values[3, 0] = float("nan")  # missing: the same input as masked
    valid = torch.tensor([True, False, True, True])
    out = enc(values, valid)
    assert out.shape == (4, enc.out_dim) and enc.in_dim == values.shape[1]
    assert torch.isfinite(out).all()
    assert (out[1] == 0).all() and (out[3] == 0).all()
    assert (out[0].abs() > 1e-6).any() and (out[2].abs() > 1e-6).any()
    assert torch.equal(out[0], enc(RAW[name][:1])[0])  # unmasked rows as without a mask


def test_place_poles_give_the_axis_whatever_the_longitude() -> None:
    lons = [-180.0, -73.0, 0.0, 45.5, 179.0]
    north = _features("place", [[90.0, lon] for lon in lons])
    south = _features("place", [[-90.0, lon] for lon in lons])
    assert torch.allclose(north, torch.tensor([0.0, 0.0, 1.0]).expand(5, 3), atol=1e-6)
    assert torch.allclose(south, torch.tensor([0.0, 0.0, -1.0]).expand(5, 3), atol=1e-6)
    for pole in (90.0, -90.0):  # the octaves too: every longitude at a pole is one point
        feats = _features("place", [[pole, lon] for lon in lons], frequencies=4)
        assert feats.shape == (5, 3 + 4 * 4)
        assert torch.allclose(feats, feats[:1].expand_as(feats), atol=1e-5)


def test_place_xyz_on_the_equator() -> None:
    xyz = _features("place", [[0.0, 0.0], [0.0, 90.0], [0.0, 180.0]])
    assert torch.allclose(xyz, torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]), atol=1e-6)


def test_place_date_line_is_continuous() -> None:
    feats = _features("place", [[12.0, 180.0], [12.0, -180.0], [12.0, 179.9], [12.0, -179.9], [12.0, 0.2]],
                      frequencies=5)
    assert torch.allclose(feats[0], feats[1], atol=1e-5)
    across = _dist(feats[2], feats[3])  # 0.2 degrees apart, across the date line
    meridian = _dist(_features("place", [[12.0, -0.1]], frequencies=5)[0], _features(
        "place", [[12.0, 0.1]], frequencies=5)[0])  # 0.2 degrees apart, across Greenwich
    assert across == pytest.approx(meridian, rel=1e-3)
    assert across < 0.1 * _dist(feats[2], feats[4])


def test_date_31_december_next_to_1_january() -> None:
    f = _features("date", [[365.0], [366.0], [1.0], [2.0], [182.0]])
    dec31, dec31_leap, jan1, jan2, jul1 = f
    day = _dist(jan1, jan2)
    assert _dist(dec31, jan1) < 1.5 * day and _dist(dec31_leap, jan1) < day
    assert _dist(dec31, jan1) < 0.02 * _dist(jan1, jul1)
    assert torch.allclose(jan1, torch.tensor([0.0, 1.0]), atol=1e-6)  # sin, cos of 0


def test_date_harmonics_add_sin_cos_pairs() -> None:
    f = _features("date", [[1.0 + 365.25 / 4]], harmonics=2)  # a quarter year: angle pi/2, its double pi
    assert torch.allclose(f, torch.tensor([[1.0, 0.0, 0.0, -1.0]]), atol=1e-5)


def test_hour_wraps_at_midnight() -> None:
    f = _features("hour", [[23.9], [0.1], [0.3], [12.0], [6.0]])
    assert _dist(f[0], f[1]) == pytest.approx(_dist(f[1], f[2]), rel=1e-3)
    assert _dist(f[0], f[1]) < 0.1 * _dist(f[1], f[3])
    assert torch.allclose(f[4], torch.tensor([1.0, 0.0]), atol=1e-6)


def test_elevation_scales_resolve_fine_and_coarse_differences() -> None:
    two_pi_100 = 2 * torch.pi * 100
    f = _features("elevation", [[0.0], [two_pi_100], [50.0], [0.0]], scales=[100, 10000])
    assert f.shape == (4, 4)  # sin 100, sin 10k, cos 100, cos 10k
    fine = [0, 2]
    coarse = [1, 3]
    assert torch.allclose(f[0, fine], f[1, fine], atol=1e-5)  # the 100 m pair repeats every 628 m ...
    assert _dist(f[0, coarse], f[1, coarse]) > 0.05  # ... the 10 km pair tells them apart
    assert _dist(f[0, fine], f[2, fine]) > 50 * _dist(f[0, coarse], f[2, coarse])  # 50 m: a fine-scale move
    assert torch.allclose(f[3], torch.tensor([0.0, 0.0, 1.0, 1.0]))  # sea level


def test_elevation_linear_term_and_default_width() -> None:
    assert create_metadata_encoder("elevation").out_dim == 6  # scales 100, 1000, 10000 m
    f = _features("elevation", [[2000.0], [-500.0]], scales=[1000], linear_scale=1000)
    assert f.shape == (2, 3) and f[:, 2].tolist() == [2.0, -0.5]


def test_bad_encoder_names_and_options_are_one_line_errors() -> None:
    with pytest.raises(MetadataError, match="unknown metadata encoder 'planet'.*place"):
        create_metadata_encoder("planet")
    with pytest.raises(MetadataError, match="'place'.*freq"):
        create_metadata_encoder("place", freq=3)
    with pytest.raises(MetadataError, match="scales"):
        create_metadata_encoder("elevation", scales=[])
    with pytest.raises(MetadataError, match=r"\[batch, 2\].*lat, lon"):
        create_metadata_encoder("place")(torch.zeros(3, 3))


def _encoder(**mlp: object) -> MetadataEncoder:
    torch.manual_seed(0)
    return MetadataEncoder({"place": {"frequencies": 3}, "date": None, "depth": {"encoder": "elevation",
                                                                                  "scales": [1, 10, 100]}}, **mlp)


BATCH = {"place": RAW["place"], "date": RAW["date"], "depth": RAW["elevation"]}


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_metadata_encoder_concatenates_components_into_its_mlp(depth: int) -> None:
    enc = _encoder(dim=16, hidden=32, depth=depth, dropout=0.1)
    feats = enc.encode_components(BATCH)
    assert feats.shape == (4, (3 + 12) + 2 + 6)
    assert enc(BATCH).shape == (4, 16) and enc.out_dim == 16
    assert sum(isinstance(m, torch.nn.Linear) for m in enc.mlp) == depth


def test_masked_and_missing_components_are_the_same_input() -> None:
    enc = _encoder().eval()
    missing = {**BATCH, "date": torch.full((4, 1), float("nan"))}
    masked = enc(BATCH, {"date": torch.zeros(4, dtype=torch.bool)})
    assert torch.equal(enc(missing), masked)
    assert not torch.allclose(enc(BATCH), masked)
    none = {n: torch.zeros(4, dtype=torch.bool) for n in BATCH}  # nothing known: one learnt constant
    out = enc(BATCH, none)
    assert torch.allclose(out, out[:1].expand_as(out))


@pytest.mark.parametrize("fusion", ["concat", "film"])
def test_fusion_shapes(fusion: str) -> None:
    module = create_fusion(fusion, 12, 5)
    out = module(torch.randn(3, 12), torch.randn(3, 5))
    assert out.shape == (3, module.out_dim)
    assert module.out_dim == (17 if fusion == "concat" else 12)


def test_film_is_the_identity_at_initialisation_and_then_learns() -> None:
    torch.manual_seed(0)
    film = create_fusion("film", 12, 5)
    image, meta = torch.randn(3, 12), torch.randn(3, 5)
    assert torch.equal(film(image, meta), image)
    film(image, meta).pow(2).sum().backward()
    torch.optim.SGD(film.parameters(), lr=0.1).step()
    assert not torch.allclose(film(image, meta), image)


def test_unknown_fusion_lists_choices() -> None:
    with pytest.raises(MetadataError, match="concat.*film"):
        create_fusion("sum", 4, 4)


@pytest.mark.parametrize("fusion", ["concat", "film"])
def test_gradients_reach_every_parameter(fusion: str) -> None:
    enc = _encoder(dim=8, hidden=16, depth=3)
    fuse = create_fusion(fusion, 10, enc.out_dim)
    image = torch.randn(4, 10, requires_grad=True)
    batch = {**BATCH, "date": torch.tensor([[1.0], [float("nan")], [200.0], [300.0]])}  # a missing date: no NaN
    params = list(enc.parameters()) + list(fuse.parameters())
    opt = torch.optim.SGD(params, lr=0.1)
    for _ in range(2):  # FiLM starts at zero weights: the metadata MLP gets a gradient from the second step on
        opt.zero_grad()
        fuse(image, enc(batch)).sin().sum().backward()
        opt.step()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in params)


def test_spec_round_trip_rebuilds_the_same_model() -> None:
    enc = _encoder(dim=8, hidden=16, depth=2, dropout=0.2).eval()
    spec = json.loads(json.dumps(enc.spec()))
    assert [c["name"] for c in spec["components"]] == ["place", "date", "depth"]
    assert spec["components"][2] == {"name": "depth", "encoder": "elevation", "inputs": ["elevation"], "out_dim": 6,
                                     "options": {"scales": [1.0, 10.0, 100.0], "linear_scale": None}}
    again = MetadataEncoder.from_spec(spec)
    again.load_state_dict(enc.state_dict())
    assert again.eval().spec() == spec
    assert torch.equal(again(BATCH), enc(BATCH))


def test_a_mismatched_layout_is_refused_naming_both() -> None:
    enc = _encoder()
    wrong = {"place": RAW["place"], "hour": RAW["hour"]}
    with pytest.raises(MetadataError, match=r"expects place\[2: lat, lon\], date.*depth.*given place\[2\], hour"):
        enc(wrong)
    with pytest.raises(MetadataError, match=r"place\[2: lat, lon\].*given place\[3\]"):
        enc({**BATCH, "place": torch.zeros(4, 3)})
    spec = json.loads(json.dumps(enc.spec()))
    with pytest.raises(MetadataError, match="given place, date$"):
        check_layout(spec, ["place", "date"])
    check_layout(spec, ["depth", "place", "date"])  # order does not matter
    with pytest.raises(MetadataError, match="unknown components"):
        enc(BATCH, {"hour": torch.ones(4, dtype=torch.bool)})


def test_a_spec_that_no_longer_rebuilds_the_same_is_refused() -> None:
    spec = _encoder().spec()
    spec["components"][0]["out_dim"] = 99
    with pytest.raises(MetadataError, match="does not rebuild"):
        MetadataEncoder.from_spec(spec)
    with pytest.raises(MetadataError, match="version"):
        MetadataEncoder.from_spec({**spec, "version": 7})


NAMES = ("place", "date", "elevation")
PARTIAL = {"place": 0.1, "date": 0.25}  # elevation never alone: all three hidden <=> the whole record hidden


def _rates(masking: MetadataMasking, progress: float, batches: int = 20, size: int = 1000) -> dict[str, float]:
    """Fraction of records wholly hidden, and per component the fraction hidden alone among the records kept."""
    gen = torch.Generator().manual_seed(0)
    full = 0
    alone = dict.fromkeys(NAMES, 0)
    for _ in range(batches):
        out = masking.apply({n: torch.ones(size, dtype=torch.bool) for n in NAMES}, progress, gen)
        hidden = torch.stack([~out[n] for n in NAMES]).all(0)
        full += int(hidden.sum())
        for n in NAMES:
            alone[n] += int((~out[n] & ~hidden).sum())
    kept = batches * size - full
    return {"full": full / (batches * size), "kept": kept, **{n: alone[n] / max(kept, 1) for n in NAMES}}


def _four_sigma(p: float, n: int) -> float:
    return 4 * (p * (1 - p) / n) ** 0.5


def test_masking_schedule_is_linear_then_constant() -> None:
    m = MetadataMasking()
    assert (m.start, m.end, m.fraction) == (1.0, 0.05, 0.3)
    assert [m.full_probability(p) for p in (0.0, 0.3, 0.6, 1.0)] == [1.0, 0.05, 0.05, 0.05]
    assert m.full_probability(0.15) == pytest.approx(0.525)
    assert m.full_probability(0.075) == pytest.approx(0.7625)  # linear, not cosine (0.861 a quarter of the way)
    assert MetadataMasking(fraction=0.0).full_probability(0.0) == 0.05


def test_masking_at_the_start_hides_every_record() -> None:
    rates = _rates(MetadataMasking(partial=PARTIAL), 0.0)
    assert rates["full"] == 1.0


@pytest.mark.parametrize(("progress", "expected"), [(0.075, 0.7625), (0.15, 0.525), (0.3, 0.05), (0.8, 0.05)])
def test_masking_rates_over_20000_records(progress: float, expected: float) -> None:
    rates = _rates(MetadataMasking(partial=PARTIAL), progress)
    assert rates["full"] == pytest.approx(expected, abs=_four_sigma(expected, 20000))
    for name, p in PARTIAL.items():
        assert rates[name] == pytest.approx(p, abs=_four_sigma(p, int(rates["kept"])))
    assert rates["elevation"] == 0.0


def test_masking_never_revives_a_missing_value_and_is_reproducible() -> None:
    masking = MetadataMasking(partial=0.3)
    masks = {"place": torch.rand(500, generator=torch.Generator().manual_seed(1)) < 0.5,
             "date": torch.ones(500, dtype=torch.bool)}
    a = masking.apply(masks, 0.5, torch.Generator().manual_seed(3))
    b = masking.apply(masks, 0.5, torch.Generator().manual_seed(3))
    c = masking.apply(masks, 0.5, torch.Generator().manual_seed(4))
    assert not (a["place"] & ~masks["place"]).any()
    assert all(torch.equal(a[n], b[n]) for n in masks) and not torch.equal(a["date"], c["date"])
    assert 0.6 < float(a["date"].float().mean()) < 0.8  # 0.95 * 0.7 kept


def test_masking_refuses_non_probabilities() -> None:
    with pytest.raises(MetadataError, match="end"):
        MetadataMasking(end=1.5)
    with pytest.raises(MetadataError, match="partial for date"):
        MetadataMasking(partial={"date": -0.1})
