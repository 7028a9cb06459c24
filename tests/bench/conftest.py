"""Fixtures of the bench tests: specs from layer lists (the tiny trained checkpoint: ``exported``, tests/conftest.py)."""
import pytest


@pytest.fixture
def spec_of():
    """``(space, [[name, op, w_bits, a_bits], ...], channels, blocks) -> ArchSpec``."""
    from qnas_deploy.spaces import get_space
    from qnas_deploy.spec import ArchSpec, LayerSpec

    def make(space, layers, channels=None, blocks=None):
        sp = get_space(space)
        return ArchSpec(space=space, scale=4, channels=channels or sp.default_channels,
                        blocks=blocks or sp.default_blocks, layers=tuple(LayerSpec(*l) for l in layers))
    return make
