"""Training a found architecture from the weights its search's supernet trained."""
import pytest
import torch

from qnas_deploy.errors import BadInput
from qnas_deploy.search import SearchConfig
from qnas_deploy.search.inherit import inherit_supernet_weights, load_supernet
from qnas_deploy.search.run import search
from qnas_deploy.spaces import build_model


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    from qnas_deploy.search import embedded_pairs

    found = tmp_path_factory.mktemp("s") / "found.json"
    cfg = SearchConfig.quick(space="basic", epochs=1, iters=2, batch=2, patch=12, channels=6, blocks=1)
    res = search(cfg, embedded_pairs(4)[:2], found, progress=False, log=lambda m: None)
    return found, res.spec


def test_the_found_path_starts_from_the_supernet_weights(searched):
    found, spec = searched
    model = build_model(spec)
    n = inherit_supernet_weights(model, spec, found)
    net = load_supernet(found)
    assert n > 2 * len(spec.layers)
    for layer in spec.layers:
        key = layer.name.replace(".", "_")
        mixed = net.mixed[key]
        edge = mixed.edges[mixed.ops.index(layer.op)]
        for c, conv in enumerate(edge.convs):
            assert torch.equal(model.layers[key][c].weight, conv.weight), layer.name
    sd, src = model.state_dict(), net.net.state_dict()
    fixed = [k for k in sd if not k.startswith("layers.") and k in src and sd[k].shape == src[k].shape]
    assert fixed and all(torch.equal(sd[k], src[k]) for k in fixed)


def test_init_refuses_another_architecture(searched, tmp_path):
    found, spec = searched
    other = spec.with_(channels=12)
    with pytest.raises(BadInput, match="channels"):
        inherit_supernet_weights(build_model(other), other, found)
    with pytest.raises(BadInput, match="no search checkpoint"):
        inherit_supernet_weights(build_model(spec), spec, tmp_path / "none.json")
