"""Online signal augmentation: time-warp squishes/stretches by the factor drawn (within Capfinder's 0-20%), keeps the
length and is switchable; jitter and scaling are switchable; evaluation transforms never augment."""

from __future__ import annotations

import numpy as np
import torch
from aeon.datasets import load_from_ts_file

from taxotrain.config import SignalAugmentConfig
from taxotrain.data.signal_transforms import Jitter, Scaling, Standardise, TimeWarp, build_signal_transforms
from taxotrain.data.signals import ucr_folder


def _leaf() -> torch.Tensor:
    X, _ = load_from_ts_file(str(ucr_folder("OSULeaf") / "OSULeaf_TRAIN.ts"))
    return torch.from_numpy(X[0].astype(np.float32))


def test_time_warp_moves_a_feature_by_the_factor() -> None:
    x = torch.zeros(1, 200)
    x[0, 100] = 1.0
    stretched = TimeWarp()(x, factor=1.2)
    squished = TimeWarp()(x, factor=0.8)
    assert stretched.shape == squished.shape == x.shape
    assert abs(int(stretched.argmax()) - 120) <= 1 and abs(int(squished.argmax()) - 80) <= 1
    assert squished[0, 160:].abs().sum() == 0  # squished: zero-padded at the end


def test_random_time_warp_stays_in_range_and_changes_real_series() -> None:
    torch.manual_seed(0)
    x = _leaf()
    warp = TimeWarp(0.2, p=1.0)
    outs = [warp(x) for _ in range(20)]
    assert all(o.shape == x.shape for o in outs)
    assert sum(not torch.allclose(o, x) for o in outs) >= 18
    assert torch.equal(TimeWarp(0.2, p=0.0)(x), x)
    spike = torch.zeros(1, 200)
    spike[0, 100] = 1.0
    shifts = [int(warp(spike).argmax()) - 100 for _ in range(50)]
    assert max(abs(s) for s in shifts) <= 21 and len(set(shifts)) > 5  # 0-20% either way, and random


def test_switches_build_only_what_is_on() -> None:
    off = SignalAugmentConfig(time_warp=0, jitter=0, scaling=0)
    assert len(build_signal_transforms(None, None, True, off)) == 0
    on = SignalAugmentConfig(time_warp=0.2, jitter=0.05, scaling=0.1)
    kinds = [type(m) for m in build_signal_transforms([0.0], [2.0], True, on)]
    assert kinds == [Standardise, TimeWarp, Scaling, Jitter]
    assert [type(m) for m in build_signal_transforms([0.0], [2.0], False, on)] == [Standardise]


def test_jitter_and_scaling_change_the_series_by_their_size() -> None:
    torch.manual_seed(0)
    x = _leaf()
    noise = Jitter(0.05)(x) - x
    assert 0.03 < float(noise.std()) < 0.07
    ratio = Scaling(0.1)(x) / x
    assert torch.allclose(ratio, ratio[..., :1].expand_as(ratio), atol=1e-4)  # one factor per channel
