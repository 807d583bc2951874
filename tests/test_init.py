"""Orthogonal initialisation (seed 002 §3.3): orthonormal rows or columns at every location of a
locally connected layer, reproducible from the seed, and the Cholesky-QR construction equal to
Householder QR with positive diag(R) on the same Gaussian draw (hence the same Haar law)."""

import pytest
import torch

from biotp.circuit import InitSpec
from biotp.layers import LocallyConnected, initialise
from biotp.layers.init import haar_columns


def orthogonal_local(channels, in_shape=(3, 9, 9), seed=0, gain=1.0):
    layer = LocallyConnected(in_shape, channels, kernel=3, stride=2, padding=1)
    g = torch.Generator().manual_seed(seed)
    for w in layer.weight_matrices():
        initialise(w, InitSpec(scheme="orthogonal", gain=gain), first=False, generator=g)
    return layer.weight.detach().clone()


@pytest.mark.parametrize("channels", [8, 27, 60], ids=["wide", "square", "tall"])  # C_in k k = 27
def test_every_location_of_a_locally_connected_layer_is_orthogonal(channels):
    w = orthogonal_local(channels).double()  # [locations, C_out, C_in k k]
    assert w.shape == (25, channels, 27)
    gram = w @ w.mT if channels <= 27 else w.mT @ w
    eye = torch.eye(min(channels, 27), dtype=torch.float64).expand_as(gram)
    assert (gram - eye).abs().max() < 1e-5
    assert (w[0] - w[1]).abs().max() > 0.1  # independent draws per location


def test_gain_scales_and_the_same_seed_gives_the_same_weights():
    a, b = orthogonal_local(8, seed=4), orthogonal_local(8, seed=4)
    assert torch.equal(a, b)
    assert not torch.allclose(a, orthogonal_local(8, seed=5))
    torch.testing.assert_close(orthogonal_local(8, seed=4, gain=2.0), 2 * a)


@pytest.mark.parametrize("m, n", [(40, 20), (300, 7), (33, 30), (5, 5)])
def test_haar_columns_is_householder_qr_with_positive_diagonal_of_the_same_draw(m, n):
    q = haar_columns(3, m, n, torch.Generator().manual_seed(1))
    a = torch.randn(3, m, n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for qi, ai in zip(q, a):  # one matrix at a time, Householder
        q_ref, r_ref = torch.linalg.qr(ai)
        q_ref = q_ref * torch.sign(torch.diagonal(r_ref))
        torch.testing.assert_close(qi, q_ref, rtol=0, atol=1e-12)
        torch.testing.assert_close(qi.T @ qi, torch.eye(n, dtype=torch.float64), rtol=0, atol=1e-12)


def test_a_single_matrix_gets_the_householder_q_of_its_own_draw():
    """Dense and conv weights draw one [max, min] Gaussian matrix each, as before batching."""
    for shape in [(7, 20), (20, 7), (4, 2, 3, 3)]:
        w = torch.empty(shape, dtype=torch.float64)
        initialise(w, InitSpec(scheme="orthogonal"), first=False, generator=torch.Generator().manual_seed(2))
        rows, cols = shape[0], w[0].numel()
        a = torch.randn(max(rows, cols), min(rows, cols), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        q, r = torch.linalg.qr(a)
        q = q * torch.sign(torch.diagonal(r))
        torch.testing.assert_close(w.reshape(rows, cols), q if rows >= cols else q.T, rtol=0, atol=1e-12)


def test_network_initialises_every_location_of_forward_and_feedback_locally_connected_layers():
    from biotp.circuit import parse_circuit
    from biotp.network import Network

    layers = [{"type": "local", "channels": 6, "kernel": 3, "stride": 2}, {"type": "local", "channels": 5},
              {"type": "dense", "size": 4}]
    net = Network(parse_circuit({"network": {"layers": layers}, "algorithm": {"name": "dtp"}}), (2, 7, 7),
                  with_feedback=True)
    # [locations, C_out, C_in k k] with fan-in 18 > 6 and 54 > 5 channels: orthonormal rows
    for w, c in ((net.layers[0].weight, 6), (net.layers[1].weight, 5), (net.feedback["2"].weight, 5)):
        w = w.detach().double()
        assert (w @ w.mT - torch.eye(c, dtype=torch.float64)).abs().max() < 1e-5
    assert (net.layers[1].weight - net.feedback["2"].weight).abs().max() > 0.1
