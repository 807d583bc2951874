"""Auto-encoders: the DTP-trained denoising auto-encoder of seed 002 §3.2.4 against a hand
computation of its equations, learning on digits, reconstruction metrics, and the filter
picture of its first layer."""

import matplotlib.image
import numpy as np
import pytest
import torch

import biotp
from biotp.algorithms import build
from biotp.autoencoder import EncoderInverseDTP, TiedDense
from biotp.circuit import parse_circuit
from biotp.errors import BiotpError, ConfigError
from biotp.plots.filters import filter_grid, filter_mosaic, grid_shape, save_filters
from biotp.training import Session, train

# the DAE circuit on the 8x8 digits: 64-100-64
DIGITS_DAE = ["data.dataset=digits", "network.layers.0.size=100", "network.layers.1.size=64",
              "data.val_split=0.1", "data.batch_size=32"]


def _dae(n_in=12, n_hidden=7, sigma=0.3):
    spec = {"network": {"layers": [{"size": n_hidden, "activation": "sigmoid"}, {"size": n_in, "activation": "sigmoid"}]},
            "loss": "mse", "algorithm": {"name": "dtp"}, "init": {"scheme": "normal", "std": 0.5},
            "autoencoder": {"corruption": sigma, "hidden_noise": sigma, "tied": True, "top_target": "encoder"}}
    return build(parse_circuit(spec), n_in, 10)


def _sig(a):
    return 1 / (1 + np.exp(-a))


def test_dtp_autoencoder_targets_and_updates_equal_the_papers_equations():
    torch.manual_seed(0)
    rule = _dae()
    enc, dec = rule.net.layers
    assert isinstance(rule, EncoderInverseDTP) and isinstance(dec, TiedDense)
    with torch.no_grad():
        enc.bias.normal_(0, 0.3)
        dec.bias.normal_(0, 0.3)
    B, sigma = 5, 0.3
    x = torch.rand(B, 12)
    x_tilde = x + sigma * torch.randn(B, 12)
    rule.train()
    torch.manual_seed(7)
    step = rule.grads(x_tilde, x)
    torch.manual_seed(7)
    eps = sigma * torch.randn(B, 7)  # the hidden noise the decoder's input received (eq. 3.21)

    W, b, c = (t.detach().double().numpy() for t in (enc.weight, enc.bias, dec.bias))
    X, Xt, E = (t.double().numpy() for t in (x, x_tilde, eps))
    h = _sig(X @ W.T + b)                               # eq. 3.20
    u = h + E
    z = _sig(u @ W + c)                                 # eq. 3.21, decoder weight Wᵀ
    h_hat = 2 * h - _sig(z @ W.T + b)                   # eq. 3.23
    h_tilde = _sig(Xt @ W.T + b)                        # f(x + ε)
    L_g = ((z - X) ** 2).sum(1).mean()
    # L_g = ||z - x||² with h constant; L_f = ||f(x + ε) - ĥ||² with ĥ constant
    d_z = 2 * (z - X) * z * (1 - z) / B
    d_h = 2 * (h_tilde - h_hat) * h_tilde * (1 - h_tilde) / B
    grad_W = u.T @ d_z + d_h.T @ Xt
    np.testing.assert_allclose(float(step.loss), L_g, rtol=1e-5)
    np.testing.assert_allclose(enc.weight.grad.double().numpy(), grad_W, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(enc.bias.grad.double().numpy(), d_h.sum(0), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(dec.bias.grad.double().numpy(), d_z.sum(0), rtol=1e-4, atol=1e-7)
    # the target itself, from the same clean pass
    torch.manual_seed(7)
    hs = rule.net(x, local=True)
    np.testing.assert_allclose(rule.targets(hs, x)[1].double().numpy(), h_hat, rtol=1e-5, atol=1e-6)
    assert step.feedback_loss is None and rule.feedback_params() == []  # the encoder is g: nothing else learns


def test_tied_weights_are_one_matrix_and_noise_only_while_training():
    rule = _dae()
    enc, dec = rule.net.layers
    assert torch.equal(dec.weight, enc.weight.T)
    assert [n for n, _ in rule.named_parameters()] == ["net.layers.0.weight", "net.layers.0.bias", "net.layers.1.bias"]
    x = torch.rand(3, 12)
    rule.eval()
    np.testing.assert_allclose(rule.predict(x).numpy(), torch.sigmoid(torch.sigmoid(x @ enc.weight.T + enc.bias)
                                                                       @ enc.weight + dec.bias).detach().numpy(), rtol=1e-6)
    rule.train()
    assert not torch.equal(rule.net(x)[-1], rule.net(x)[-1])  # ε in the decoder's input


@pytest.mark.parametrize("circuit_file, algorithm, overrides", [
    ("circuits/dtp_mnist_dae.yaml", "dtp", DIGITS_DAE),
    ("circuits/dtp_mnist_dae.yaml", "bp", DIGITS_DAE),
    ("circuits/bartunov_mnist_ae.yaml", "dtp", ["data.dataset=digits", "network.layers.0.size=48",
                                                "network.layers.1.size=16", "network.layers.2.size=48",
                                                "network.layers.3.size=64", "data.val_split=0.1", "data.batch_size=32",
                                                "optimizer.lr=0.003", "feedback.optimizer.lr=0.003"]),
])
def test_autoencoders_lower_their_reconstruction_error_on_digits(circuit_file, algorithm, overrides):
    c = biotp.load_circuit(circuit_file, overrides).with_algorithm(algorithm)
    before = Session(c).evaluate()
    after = train(c, epochs=3, progress=False)
    for split in ("train", "val", "test"):
        assert after[f"{split}_mse"][-1] < 0.5 * before[f"{split}_mse"], (split, before, after)
        assert np.isnan(after[f"{split}_error"]).all()
    # train_loss is ||z - x||² per example: the MSE times the 64 pixels
    np.testing.assert_allclose(after["train_loss"], 64 * after["train_mse"], rtol=1e-5)


def test_denoising_run_resumes_exactly(interrupted):
    c = biotp.load_circuit("circuits/dtp_mnist_dae.yaml", DIGITS_DAE + ["data.limit=400"])
    _, resumed = interrupted(train, c, 2, 3)
    assert resumed.circuit.autoencoder == c.autoencoder and c.autoencoder.corruption == 0.3  # from the file alone


@pytest.mark.parametrize("overrides, expected", [
    (["loss=cross_entropy"], "autoencoder: an auto-encoder is trained on the squared reconstruction error; set loss: mse"),
    (["network.layers.1.size=10"], "network.layers: the output layer has 10 units but dataset 'digits' has 64 inputs "
                                   "to reconstruct; expected size 64"),
    (["algorithm.name=sdtp"], "autoencoder.top_target: 'encoder' is DTP's auto-encoder target"),
])
def test_autoencoder_errors_are_clear(overrides, expected):
    with pytest.raises(ConfigError) as err:
        Session(biotp.load_circuit("circuits/dtp_mnist_dae.yaml", DIGITS_DAE + overrides))
    assert str(err.value).startswith("circuits/dtp_mnist_dae.yaml: ") and expected in str(err.value), str(err.value)


def test_angles_to_bp_are_refused_for_a_tied_decoder():
    c = biotp.load_circuit("circuits/dtp_mnist_dae.yaml", DIGITS_DAE)
    with pytest.raises(BiotpError, match="--track-angles: a tied decoder .* expected autoencoder.tied: false"):
        train(c, epochs=1, progress=False, track_angles=True)


def test_tying_needs_mirrored_layers():
    spec = {"network": {"layers": [{"size": 10}, {"size": 5}, {"size": 12}]}, "loss": "mse",
            "autoencoder": {"tied": True}}
    with pytest.raises(ConfigError, match=r"autoencoder.tied: layer 3 must be a dense layer mirroring layer 1"):
        build(parse_circuit(spec, "ae.yaml"), 12, 10)
    spec["network"]["layers"][1]["size"] = 10
    rule = build(parse_circuit(spec, "ae.yaml"), 12, 10)  # 12-10-10-12: layer 3 is layer 1 transposed
    assert torch.equal(rule.net.layers[2].weight, rule.net.layers[0].weight.T)
    assert not isinstance(rule.net.layers[1], TiedDense)


# ------------------------------------------------------------------------------ filters


def test_mosaic_tiles_are_the_filters_scaled_to_their_own_range():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(7, 5 * 4)) * np.arange(1, 8)[:, None]
    w[3] = 2.0  # a constant filter
    mosaic = filter_mosaic(w, (5, 4))
    assert grid_shape(7) == (3, 3) and mosaic.shape == (3 * 6 + 1, 3 * 5 + 1)
    for i in range(7):
        r, c = divmod(i, 3)
        tile = mosaic[1 + 6 * r : 6 + 6 * r, 1 + 5 * c : 5 + 5 * c]
        expected = np.full((5, 4), 0.5) if i == 3 else (w[i] - w[i].min()) / (w[i].max() - w[i].min())
        np.testing.assert_allclose(tile, expected.reshape(5, 4), atol=1e-12)
    assert mosaic[0].max() == 0 and mosaic[:, 0].max() == 0  # background between tiles
    assert filter_mosaic(rng.normal(size=(4, 3 * 2 * 2)), (3, 2, 2)).shape == (2 * 3 + 1, 2 * 3 + 1, 3)  # RGB
    with pytest.raises(ValueError, match="image_shape"):
        filter_mosaic(w, (6, 4))


def test_filter_grid_png_has_the_grid_size_in_pixels(tmp_path):
    w = np.random.default_rng(1).normal(size=(30, 28 * 28))
    out = tmp_path / "grid.png"
    filter_grid(w, (1, 28, 28), n=20).savefig(out)  # 20 filters: 4 rows of 5
    image = matplotlib.image.imread(out)
    assert out.stat().st_size > 1000
    assert image.shape[:2] == (2 * (4 * 29 + 1), 2 * (5 * 29 + 1))
    assert image[..., :3].std() > 0.1  # not blank


def test_save_filters_draws_the_first_layer_of_a_run(tmp_path):
    c = biotp.load_circuit("circuits/dtp_mnist_dae.yaml", DIGITS_DAE + ["data.limit=200"])
    run = train(c, epochs=1, out=tmp_path / "dae.h5", progress=False)
    png = save_filters(run.path, tmp_path / "figs" / "filters.png")  # 100 hidden units: all, 10 x 10
    assert matplotlib.image.imread(png).shape[:2] == (2 * (10 * 9 + 1), 2 * (10 * 9 + 1))
    few = save_filters(run.path, tmp_path / "few.png", n=9)
    assert matplotlib.image.imread(few).shape[:2] == (2 * (3 * 9 + 1), 2 * (3 * 9 + 1))
    with pytest.raises(BiotpError, match="no net.layers.1.weight .*tied decoder"):
        save_filters(run.path, tmp_path / "dec.png", layer=2)
