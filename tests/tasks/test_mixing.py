"""Taxonomy-aware mixup/cutmix: partners share the chosen node; cutmix's lam is the kept area."""

from __future__ import annotations

import pytest
import torch

from taxotrain.config import MixConfig
from taxotrain.tasks.mixing import TaxonomyMixer, partners
from taxotrain.taxonomy import NULL


def test_partners_share_the_label_and_unknowns_keep_themselves() -> None:
    torch.manual_seed(0)
    labels = torch.tensor([0, 1, 0, 2, 1, NULL, 0, 2])
    p = partners(labels)
    assert sorted(p.tolist()) == list(range(8))
    assert all(labels[p[i]] == labels[i] for i in range(8))
    assert p[5] == 5


def test_within_rank_mixes_only_inside_a_node() -> None:
    torch.manual_seed(1)
    x = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 1, 4, 4).clone()  # pixel value = index
    y = torch.tensor([[0, 0], [0, 1], [1, 2], [1, 3], [0, 0], [1, 2]])
    mixer = TaxonomyMixer(MixConfig(mixup_alpha=1.0, within="family"), ["family", "species"])
    for _ in range(5):
        mixed, partner, lam = mixer(x, y)
        assert partner is not None and 0 < lam < 1
        j = torch.round((mixed[:, 0, 0, 0] - lam * torch.arange(6.0)) / (1 - lam)).long()  # recover partner index
        assert torch.equal(partner, y[j])
        assert torch.equal(y[j, 0], y[:, 0])  # same family, maybe another species


def test_cutmix_lam_is_the_area_kept() -> None:
    torch.manual_seed(2)
    x = torch.zeros(4, 1, 10, 10)
    x[1::2] = 1.0
    y = torch.tensor([[0], [1], [0], [1]])
    mixer = TaxonomyMixer(MixConfig(cutmix_alpha=1.0), ["class"])
    for _ in range(10):
        mixed, partner, lam = mixer(x, y)
        changed = (mixed != x).float().mean(dim=(1, 2, 3))
        pasted_from_other = partner[:, 0] != y[:, 0]
        assert torch.allclose(changed[pasted_from_other], torch.full_like(changed[pasted_from_other], 1 - lam))


def test_cutmix_on_series_pastes_a_window_of_time() -> None:
    torch.manual_seed(0)
    x = torch.stack([torch.full((1, 50), float(i)) for i in range(4)])  # 4 univariate series, each one value
    y = torch.arange(4)[:, None]
    mixer = TaxonomyMixer(MixConfig(cutmix_alpha=1.0), ["class"])
    pasted = 0
    for _ in range(10):
        mixed, partner, lam = mixer(x, y)
        for b in range(4):
            other = (mixed[b, 0] != x[b, 0]).nonzero().flatten()
            if partner[b, 0] != y[b, 0] and len(other):  # one contiguous window, from the partner, 1 - lam long
                assert other.tolist() == list(range(int(other[0]), int(other[-1]) + 1))
                assert (mixed[b, 0, other] == float(partner[b, 0])).all()
                assert len(other) == round((1 - lam) * 50)
                pasted += 1
    assert pasted > 10  # a univariate series is mixed, not left alone


def test_off_by_default_and_bad_rank() -> None:
    x, y = torch.randn(2, 1, 4, 4), torch.tensor([[0], [1]])
    out, partner, lam = TaxonomyMixer(MixConfig(), ["class"])(x, y)
    assert out is x and partner is None and lam == 1.0
    with pytest.raises(ValueError, match="not a rank"):
        TaxonomyMixer(MixConfig(mixup_alpha=1, within="genus"), ["class"])
