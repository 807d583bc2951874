"""CIFAR-style augmentation (seed 004 §3.2): crops of the zero-padded image, exact mirror
flips, drawn from the epoch's seeded generator, training batches only."""

import numpy as np
import pytest
import torch

import biotp
from biotp.augment import augment, crop, random_crop, random_flip
from biotp.circuit import AugmentSpec
from biotp.errors import ConfigError
from biotp.training import Session, train

QUICK = ["data.limit=300", "data.batch_size=50"]


def _images(seed=0, shape=(6, 3, 7, 9)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def test_a_crop_is_the_padded_image_sliced_at_its_offset():
    images, p = _images(), 3
    out = random_crop(images, p, torch.Generator().manual_seed(5))
    H, W = images.shape[-2:]
    padded = np.pad(images.numpy(), ((0, 0), (0, 0), (p, p), (p, p)))
    offsets = []
    for b in range(len(images)):
        found = [(i, j) for i in range(2 * p + 1) for j in range(2 * p + 1)
                 if np.array_equal(out[b].numpy(), padded[b, :, i : i + H, j : j + W])]
        assert found, f"image {b} is no crop of its padded image"
        offsets.append(found[0])
    # the drawn offsets are the ones `crop` slices at, and they vary over the batch
    again = crop(images, p, torch.tensor(offsets))
    np.testing.assert_array_equal(again.numpy(), out.numpy())
    assert len(set(offsets)) > 1


def test_crop_at_the_centre_and_at_a_corner():
    images, p = _images(1), 2
    np.testing.assert_array_equal(crop(images, p, torch.full((6, 2), p)).numpy(), images.numpy())
    corner = crop(images, p, torch.zeros(6, 2, dtype=torch.long)).numpy()
    assert np.all(corner[:, :, :p, :] == 0) and np.all(corner[:, :, :, :p] == 0)
    np.testing.assert_array_equal(corner[:, :, p:, p:], images.numpy()[:, :, :-p, :-p])


@pytest.mark.parametrize("axis, numpy_axis", [(-1, 3), (-2, 2)])
def test_flips_mirror_exactly(axis, numpy_axis):
    images = _images(2, (40, 3, 5, 4))
    out = random_flip(images, axis, torch.Generator().manual_seed(0)).numpy()
    x = images.numpy()
    mirrored = np.flip(x, numpy_axis)
    flipped = [bool(np.array_equal(out[b], mirrored[b])) for b in range(len(x))]
    kept = [bool(np.array_equal(out[b], x[b])) for b in range(len(x))]
    assert all(f != k for f, k in zip(flipped, kept))  # each image is one or the other
    assert 5 < sum(flipped) < 35


def test_flat_batches_keep_their_layout_and_nothing_asked_is_identity():
    x = _images(3, (4, 1 * 8 * 8)).reshape(4, 64)
    same = augment(x, (1, 8, 8), AugmentSpec(), torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(same.numpy(), x.numpy())
    out = augment(x, (1, 8, 8), AugmentSpec(crop_padding=2, flip="horizontal"), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)



def test_noise_is_gaussian_of_sigma_and_drawn_after_crops_and_flips():
    x = _images(4, (500, 1 * 8 * 8)).reshape(500, 64)
    noisy = augment(x, (1, 8, 8), AugmentSpec(noise=0.3), torch.Generator().manual_seed(0))
    eps = (noisy - x).numpy().ravel()  # 32 000 draws
    assert abs(eps.mean()) < 0.006 and abs(eps.std() - 0.3) < 0.005
    assert abs(np.mean(np.abs(eps) < 0.3) - 0.6827) < 0.01  # one σ holds 68.3 % of a normal's mass
    both = augment(x, (1, 8, 8), AugmentSpec(crop_padding=2, flip="vertical", noise=0.3), torch.Generator().manual_seed(1))
    moved = augment(x, (1, 8, 8), AugmentSpec(crop_padding=2, flip="vertical"), torch.Generator().manual_seed(1))
    assert abs((both - moved).std().item() - 0.3) < 0.005  # the same crops and flips, then the noise


def test_noise_needs_no_image_dataset():
    c = biotp.load_circuit("circuits/mlp.yaml", ["data.dataset=synthetic", "data.augment.noise=0.3"])
    assert c.data.augment == AugmentSpec(noise=0.3)


@pytest.fixture(scope="module")
def circuits():
    plain = biotp.load_circuit("circuits/mlp.yaml", QUICK)
    return plain, plain.with_updates("data.augment.crop_padding=2", "data.augment.flip=horizontal")


def test_same_seed_same_augmented_batches(circuits):
    _, aug = circuits
    a, b = Session(aug), Session(aug)
    for (xa, ya), (xb, yb) in zip(a.batches(1), b.batches(1)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    first = next(a.batches(1))[0]
    assert not torch.equal(first, next(a.batches(2))[0])  # a new epoch draws anew
    other = Session(aug.with_updates("seed=1"))
    assert not torch.equal(first, next(other.batches(1))[0])


def test_training_batches_are_augmented_validation_and_test_untouched(circuits):
    plain, aug = circuits
    p, a = Session(plain), Session(aug)
    (xp, yp), (xa, ya) = next(p.batches(1)), next(a.batches(1))
    assert torch.equal(yp, ya) and not torch.equal(xp, xa)  # same examples, transformed images
    for split in ("train", "val", "test"):
        for tp, ta in zip(getattr(p, split), getattr(a, split)):
            assert torch.equal(tp, ta)
    assert p.evaluate() == a.evaluate()  # same weights, same (unaugmented) evaluation data


def test_noise_reaches_training_batches_only(circuits):
    plain, _ = circuits
    p, a = Session(plain), Session(plain.with_updates("data.augment.noise=0.3"))
    (xp, yp), (xa, ya) = next(p.batches(1)), next(a.batches(1))
    assert torch.equal(yp, ya) and abs((xa - xp).std().item() - 0.3) < 0.02  # 50 x 64 draws
    assert p.evaluate() == a.evaluate()


def test_resumed_augmented_run_equals_uninterrupted(interrupted, circuits):
    _, aug = circuits
    _, resumed = interrupted(train, aug, 2, 3)
    assert resumed.circuit.data.augment == aug.data.augment and aug.data.augment.crop_padding == 2  # from the file alone


@pytest.mark.parametrize("overrides, expected", [
    (["data.dataset=synthetic", "data.augment.flip=horizontal"],
     "data.augment: crops and flips need an image dataset"),
    (["data.augment.flip=yes"], "data.augment.flip: Input should be 'none', 'horizontal' or 'vertical'"),
    (["data.augment.crop_padding=-4"], "data.augment.crop_padding: Input should be greater than or equal to 0"),
    (["data.augment.crop=4"], "data.augment.crop: unknown key; expected one of: crop_padding, flip, noise"),
    (["data.augment.noise=-0.3"], "data.augment.noise: Input should be greater than or equal to 0"),
])
def test_schema_errors_name_the_file_key_and_expectation(overrides, expected):
    with pytest.raises(ConfigError) as err:
        biotp.load_circuit("circuits/mlp.yaml", overrides)
    assert str(err.value).startswith("circuits/mlp.yaml: ") and expected in str(err.value), str(err.value)


def test_cifar_circuit_augments_as_seed_004():
    c = biotp.load_circuit("circuits/bartunov_cifar10_lc.yaml")
    assert c.data.augment == AugmentSpec(crop_padding=4, flip="horizontal")
