"""Fixtures of the bench tests: specs from layer lists (the tiny trained checkpoint: ``exported``, tests/conftest.py)."""
import pytest


@pytest.fixture
def spec_of():
    """``(space, [[name, op, w_bits, a_bits(, c_in, c_out)], ...], channels, blocks) -> ArchSpec``
    (the rows of ``bench bitops``: a free layer's width is its ``c_out``)."""
    from qnas_deploy.spaces import get_space
    from qnas_deploy.spec import ArchSpec, LayerSpec

    def make(space, layers, channels=None, blocks=None):
        sp = get_space(space)
        channels, blocks = channels or sp.default_channels, blocks or sp.default_blocks
        free = {s.name for s in sp.layout(channels, blocks, 4) if s.free_width}
        return ArchSpec(space=space, scale=4, channels=channels, blocks=blocks,
                        layers=tuple(LayerSpec(*l[:4], l[5] if len(l) == 6 and l[0] in free else None)
                                     for l in layers))
    return make
