"""Transforms keep the aspect ratio (pad, never squash); decoding of odd files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torchvision.transforms import v2

from taxotrain.config import AugmentConfig
from taxotrain.data.images import PadToSquare, build_transforms
from taxotrain_runtime.images import ImageRefused, load_image


def _extent(x: torch.Tensor) -> tuple[int, int]:
    mask = x[0] > 0.5
    rows, cols = np.flatnonzero(mask.any(1).numpy()), np.flatnonzero(mask.any(0).numpy())
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def test_elongated_organism_keeps_its_aspect() -> None:
    img = torch.zeros(1, 20, 80, dtype=torch.uint8)
    img[:, 5:15, 10:70] = 255  # a 10 x 60 bar
    out = build_transforms(48, [0.0], [1.0], train=False, pad_fill="zero")(img)
    assert out.shape == (1, 48, 48)
    h, w = _extent(out)
    assert abs(w / h - 6.0) < 1.0, f"bar squashed to {h}x{w}"


def test_random_train_transforms_keep_shape_and_aspect() -> None:
    torch.manual_seed(0)
    img = torch.zeros(1, 30, 90, dtype=torch.uint8)
    img[:, 10:20, 10:80] = 255
    tf = build_transforms(48, [0.0], [1.0], train=True, augment=AugmentConfig(), pad_fill="zero")
    for _ in range(8):
        out = tf(img)
        h, w = _extent(out)
        assert out.shape == (1, 48, 48) and max(h, w) / min(h, w) > 4  # flips/rot90 never squash


@pytest.mark.parametrize("policy", ["randaugment", "trivialaugment"])
def test_augmentation_policy_changes_the_pixels(policy: str) -> None:
    # with flips and turns off, the policy is the only random step: most draws must change the image
    img = torch.randint(0, 255, (3, 40, 30), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    still = AugmentConfig(hflip=0, vflip=0, rot90=False)
    plain = build_transforms(32, [0.5] * 3, [0.25] * 3, train=True, augment=still)(img)
    tf = build_transforms(32, [0.5] * 3, [0.25] * 3, train=True, augment=still.model_copy(update={"policy": policy}))
    torch.manual_seed(0)
    changed = sum(not torch.allclose(tf(img), plain) for _ in range(20))
    assert changed >= 12, f"{policy} changed only {changed} of 20 images"
    assert tf(img).shape == (3, 32, 32) and tf(img).dtype == torch.float32


def test_random_erasing_blanks_a_rectangle_and_rotation_turns() -> None:
    img = torch.randint(1, 255, (3, 40, 30), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    still = AugmentConfig(hflip=0, vflip=0, rot90=False)
    torch.manual_seed(0)
    erased = build_transforms(32, [0.5] * 3, [0.25] * 3, train=True,
                              augment=still.model_copy(update={"random_erasing": 1.0}))(img)
    zero = (erased == 0).all(0)  # erasing writes value 0 after normalising; the noise image never maps to 0
    rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
    assert len(rows) and zero[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()  # one rectangle
    plain = build_transforms(32, [0.5] * 3, [0.25] * 3, train=True, augment=still)(img)
    turned = build_transforms(32, [0.5] * 3, [0.25] * 3, train=True,
                              augment=still.model_copy(update={"rotate_degrees": 30}))
    assert sum(not torch.allclose(turned(img), plain) for _ in range(10)) >= 8


@pytest.mark.parametrize("pad_fill", ["edge", "zero", "mean"])
def test_eval_transforms_match_torchvisions_resize_pad_normalise(pad_fill: str) -> None:
    # the one-module steps compute what torchvision's separate transforms do (to float rounding), so a model keeps
    # seeing the same inputs; the reference is torchvision's Resize(max_size) + pad + ToDtype + Normalize
    gen = torch.Generator().manual_seed(0)
    mean, std = [0.3, 0.5, 0.7], [0.2, 0.25, 0.3]
    fill = {"edge": None, "zero": 0, "mean": round(0.5 * 255)}[pad_fill]
    for h, w in [(70, 73), (20, 80), (91, 33), (48, 48), (5, 200), (300, 301)]:
        img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)
        x = v2.Resize(size=None, max_size=48, antialias=True)(img)
        d = abs(x.shape[-2] - x.shape[-1])
        pad = [d // 2, 0, d - d // 2, 0] if x.shape[-2] > x.shape[-1] else [0, d // 2, 0, d - d // 2]
        x = TF.pad(x, pad, padding_mode="edge") if fill is None else TF.pad(x, pad, fill=fill)
        x = v2.Resize([48, 48], antialias=True)(x)
        ref = v2.Normalize(mean, std)(v2.ToDtype(torch.float32, scale=True)(x))
        out = build_transforms(48, mean, std, train=False, pad_fill=pad_fill)(img)
        assert out.shape == ref.shape == (3, 48, 48)
        assert torch.allclose(out, ref, atol=1e-5), (h, w)


def test_dihedral_augmentation_draws_all_eight_views_exactly() -> None:
    torch.manual_seed(0)
    img = torch.arange(16, dtype=torch.uint8).view(1, 4, 4)
    tf = build_transforms(4, [0.0], [1 / 255], train=True, augment=AugmentConfig())
    views = {tuple(tf(img).flatten().tolist()) for _ in range(200)}
    assert len(views) == 8 and all(sorted(v) == list(range(16)) for v in views)  # exact, no interpolation
    fixed = build_transforms(4, [0.0], [1 / 255], train=True, augment=AugmentConfig(hflip=0, vflip=0, rot90=False))
    assert {tuple(fixed(img).flatten().tolist()) for _ in range(20)} == {tuple(range(16))}
    mirror = build_transforms(4, [0.0], [1 / 255], train=True, augment=AugmentConfig(hflip=1, vflip=0, rot90=False))
    assert all(torch.equal(mirror(img), img.flip(-1).float()) for _ in range(20))  # left-right, every time


def test_pad_to_square_edge_repeats_border() -> None:
    img = torch.tensor([[[1, 2, 3, 4]]], dtype=torch.uint8).expand(1, 2, 4).clone()
    out = PadToSquare("edge")(img)
    assert out.shape == (1, 4, 4) and torch.equal(out[0, 0], img[0, 0]) and torch.equal(out[0, -1], img[0, -1])
    tall = torch.arange(6, dtype=torch.uint8).view(1, 3, 2)
    assert torch.equal(PadToSquare("edge")(tall), TF.pad(tall, [0, 0, 1, 0], padding_mode="edge"))


def test_load_image_handles_tiff_16bit_and_errors(tmp_path: Path) -> None:
    arr = (np.arange(64 * 32, dtype=np.uint16).reshape(32, 64) * 30)
    Image.fromarray(arr).save(tmp_path / "deep.tif")
    x = load_image(tmp_path / "deep.tif", 1)
    assert x.shape == (32, 64, 1) and x.dtype == np.uint8 and x.max() == 255  # stretched to 8 bits
    assert load_image(tmp_path / "deep.tif", 3).shape == (32, 64, 3)
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageRefused, match="empty"):
        load_image(tmp_path / "empty.png", 1)
    (tmp_path / "text.jpg").write_text("hello")
    with pytest.raises(ImageRefused, match="not an image"):
        load_image(tmp_path / "text.jpg", 1)


def test_normalisation_scales_by_the_dtype_like_torchvision() -> None:
    # 16-bit PNGs decode to uint16: they must be divided by 65535, as ToDtype(scale=True) does, not by 255
    mean, std = [0.4], [0.2]
    norm = build_transforms(8, mean, std, train=False).transforms[-1]
    for img in [torch.randint(0, 65536, (1, 8, 8), dtype=torch.int32).to(torch.uint16),
                torch.randint(0, 256, (1, 8, 8), dtype=torch.uint8)]:
        ref = v2.Normalize(mean, std)(v2.ToDtype(torch.float32, scale=True)(img))
        assert torch.allclose(norm(img), ref, atol=1e-5), img.dtype
    floats = torch.rand(1, 8, 8)
    before = floats.clone()
    assert torch.allclose(norm(floats), (before - 0.4) / 0.2) and torch.equal(floats, before)  # not in place


def test_a_16_bit_png_reads_for_prediction_as_prepare_stored_it(tmp_path: Path) -> None:
    from taxotrain.data.images import decode_bytes as decode
    from taxotrain.data.prepare import prepare_images
    from taxotrain.data.store import Store

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    deep = tmp_path / "imgs" / "a" / "deep.png"  # a narrow 16-bit range, as microscopes write
    Image.fromarray(rng.integers(1000, 3000, (20, 30)).astype(np.uint16)).save(deep)
    assert decode(deep.read_bytes(), 1).dtype == torch.uint16  # torchvision alone would keep 16 bits
    prepare_images(tmp_path / "imgs", tmp_path / "s.h5", ["class"], workers=0, progress=False)
    store = Store(tmp_path / "s.h5")
    trained_on = decode(store.read(store.paths.index("a/deep.png")), 1)
    predicted_on = torch.from_numpy(load_image(deep, 1)).permute(2, 0, 1)  # what predict decodes
    assert predicted_on.dtype == trained_on.dtype == torch.uint8 and int(predicted_on.max()) == 255  # stretched
    assert (predicted_on.int() - trained_on.int()).abs().max() <= 1


def test_tta_views_are_the_eight_distinct_dihedral_views() -> None:
    from taxotrain.data.images import tta_views

    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    views = tta_views(x, "dihedral")
    assert len(views) == 8 and len({tuple(v[0].flatten().tolist()) for v in views}) == 8
    assert torch.equal(views[0], x) and len(tta_views(x, "flip")) == 2 and torch.equal(tta_views(x, "flip")[1],
                                                                                      x.flip(-1))
    with pytest.raises(ValueError, match="dihedral"):
        tta_views(x, "mirror")


def test_trained_views_follow_the_training_augmentation() -> None:
    from taxotrain.data.images import trained_views

    assert trained_views(AugmentConfig()) == "dihedral"  # default: flips + 90-degree rotations
    assert trained_views(AugmentConfig(rot90=False, vflip=0)) == "flip"
    assert trained_views(AugmentConfig(rot90=False, hflip=0)) == "none"
