"""The alpha loss terms: eq. 8's normalised cost, eq. 9's entropy and its schedule mu(t)."""
import numpy as np
import torch

from qnas_deploy.search import Supernet
from qnas_deploy.search.losses import entropy, entropy_weight, expected_bitops, uniform_bitops


def test_lcq_is_one_at_uniform_alphas_and_low_on_the_cheapest_edges():
    net = Supernet("basic", (4, 8), "san", channels=6, blocks=1)
    net.measure_sizes()
    keys = list(net.mixed)
    macs = [net.edge_cost[k] for k in keys]
    lcq = expected_bitops([net.mixed[k].alphas() for k in keys], macs, (4, 8)) / uniform_bitops(macs, (4, 8))
    assert abs(float(lcq.detach()) - 1.0) < 1e-6
    # all the mass on the cheapest edge of every layer: far below 1
    cheapest = []
    for m in macs:
        a = torch.zeros(len(m), 2)
        a[int(torch.argmin(m)), 0] = 1
        cheapest.append(a)
    assert float(expected_bitops(cheapest, macs, (4, 8))) / uniform_bitops(macs, (4, 8)) < 0.5


def test_entropy_schedule_and_entropy():
    assert [entropy_weight(e, 1e-4) for e in (0, 1, 1.5, 2)] == [0, 0, 0, 0]
    ws = [entropy_weight(e, 1e-4) for e in (2.5, 3, 5, 10, 20)]
    assert all(b > a > 0 for a, b in zip(ws, ws[1:]))
    uniform = torch.full((4, 2), 1 / 8)
    assert abs(float(entropy([uniform])) - np.log(8)) < 1e-6
    one_hot = torch.zeros(4, 2)
    one_hot[0, 0] = 1
    assert float(entropy([one_hot])) < 1e-6
