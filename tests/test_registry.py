"""The one registry pattern: names sorted or in registration order, unknown names as the registry's own one-line
error, None keyword arguments left to the constructor's defaults; and every registry of parts is one."""

from __future__ import annotations

import pytest

from taxotrain.registry import Registry


class PartError(Exception):
    pass


def test_register_get_create_and_the_unknown_name_error() -> None:
    parts: Registry = Registry("part", choices="model.part takes one of", error=PartError)

    @parts.register("zeta")
    def zeta(x: int, scale: int = 3) -> int:
        return x * scale

    parts.add("alpha", lambda x: -x)
    assert parts.names() == ["alpha", "zeta"] and "zeta" in parts and "beta" not in parts
    assert [name for name, _ in parts.items()] == ["zeta", "alpha"]
    assert parts.create("zeta", 2, scale=None) == 6 and parts.create("zeta", 2, scale=5) == 10
    with pytest.raises(PartError, match=r"^unknown part 'beta'; model.part takes one of: alpha, zeta$"):
        parts.get("beta")
    ordered: Registry = Registry("model", ordered=True)
    ordered.add("weak", 1)
    ordered.add("strong", 2)
    assert ordered.names() == ["weak", "strong"]
    with pytest.raises(ValueError, match="choose one of: weak, strong"):
        ordered.get("other")


def test_every_registry_of_parts_is_a_registry() -> None:
    from taxotrain.models.heads import HEADS
    from taxotrain.models.margin import MARGINS
    from taxotrain.models.metadata import ENCODERS, FUSIONS, MetadataError
    from taxotrain.models.rocket import ROCKET
    from taxotrain.models.signal_nets import NETS, SignalNetError
    from taxotrain.tasks.base import TASKS

    assert {"linear", "flat"} <= set(HEADS.names()) and "arcface" in MARGINS.names()
    assert ROCKET.names()[0] == "minirocket" and "resnet1d" in NETS.names() and "image" in TASKS.names()
    assert {"place", "date"} <= set(ENCODERS.names()) and {"concat", "film"} <= set(FUSIONS.names())
    with pytest.raises(MetadataError):
        FUSIONS.get("sum")
    with pytest.raises(SignalNetError):
        NETS.get("lstm9000")
