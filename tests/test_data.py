"""Tests of biotp.data on tiny files written in the real formats (IDX, CIFAR pickles, ImageNet-32 npz)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from biotp import data
from biotp.data import Remote
from biotp.errors import DataError

REAL_MNIST = Path("/work/shared/data/mnist")
IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


# ----------------------------------------------------------------------------- writers in the real formats


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """An IDX file: 0x0000, dtype code, ndim, big-endian int32 dims, big-endian data."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(dtype).tobytes()


def write(path: Path, payload: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if path.name.endswith(".gz") else payload)
    return path


def make_idx_set(folder: Path, n_train: int = 40, n_test: int = 9, gz: bool = True, seed: int = 0):
    """Four IDX files; training image k has pixel [0, 0] == k so examples can be identified."""
    rng = np.random.default_rng(seed)
    xtr = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    xtr[:, 0, 0] = np.arange(n_train)
    ytr = rng.integers(0, 10, n_train, dtype=np.uint8)
    xte = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    yte = rng.integers(0, 10, n_test, dtype=np.uint8)
    ext = ".gz" if gz else ""
    for name, arr in zip(IDX, (xtr, ytr, xte, yte)):
        write(folder / (name + ext), idx_bytes(arr))
    return xtr, ytr, xte, yte


def ids(ds: data.Dataset) -> list[int]:
    return torch.round(ds.x[:, 0, 0, 0] * 255).long().tolist()


# ----------------------------------------------------------------------------- IDX loaders


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
@pytest.mark.parametrize("gz", [True, False])
def test_idx_dataset_exact_values(tmp_path, name, gz):
    xtr, ytr, xte, yte = make_idx_set(tmp_path / name, gz=gz)
    s = data.load(name, data_dir=tmp_path, val_split=0)
    assert s.train.x.dtype == torch.float32 and s.train.y.dtype == torch.int64
    assert s.train.x.shape == (40, 1, 28, 28) and s.test.x.shape == (9, 1, 28, 28) and len(s.val) == 0
    assert torch.equal(s.train.x, torch.from_numpy(xtr).float().unsqueeze(1) / 255)
    assert torch.equal(s.test.x, torch.from_numpy(xte).float().unsqueeze(1) / 255)
    assert s.train.y.tolist() == ytr.tolist() and s.test.y.tolist() == yte.tolist()
    assert s.train.input_shape == (1, 28, 28) and s.train.n_inputs == 784 and s.train.n_classes == 10


def test_idx_files_in_raw_subfolder_and_mixed_compression(tmp_path):
    xtr, ytr, _, _ = make_idx_set(tmp_path / "mnist" / "raw", gz=False)
    (tmp_path / "mnist" / "raw" / IDX[0]).rename(tmp_path / "mnist" / "raw" / "tmp")
    write(tmp_path / "mnist" / "raw" / (IDX[0] + ".gz"), (tmp_path / "mnist" / "raw" / "tmp").read_bytes())
    s = data.load("mnist", data_dir=tmp_path, val_split=0)
    assert torch.equal(s.train.x[:, 0], torch.from_numpy(xtr).float() / 255)


@pytest.mark.parametrize("code,values", [(0x0C, [[-5, 70000], [3, 0]]), (0x0B, [[-2, 1], [300, 7]]),
                                         (0x0D, [[0.5, -1.25], [3.0, 8.0]])])
def test_read_idx_parses_every_header_dtype(tmp_path, code, values):
    arr = np.array(values)
    out = data.read_idx(write(tmp_path / "a.idx", idx_bytes(arr, code)))
    assert out.shape == (2, 2) and out.tolist() == arr.tolist()
    assert out.dtype.isnative


def test_val_split_fixed_seeded_disjoint_covering(tmp_path):
    make_idx_set(tmp_path / "mnist", n_train=50)
    a = data.load("mnist", data_dir=tmp_path, val_split=0.2, seed=1)
    b = data.load("mnist", data_dir=tmp_path, val_split=0.2, seed=1)
    c = data.load("mnist", data_dir=tmp_path, val_split=0.2, seed=2)
    assert (len(a.train), len(a.val), len(a.test)) == (40, 10, 9)
    assert ids(a.val) == ids(b.val) and ids(a.train) == ids(b.train)
    assert ids(a.val) != ids(c.val)
    assert set(ids(a.train)).isdisjoint(ids(a.val))
    assert sorted(ids(a.train) + ids(a.val)) == list(range(50))
    assert ids(a.train) == sorted(ids(a.train)) and ids(a.val) == sorted(ids(a.val))  # original order kept
    # the chosen examples are the first n_val of a torch.Generator(seed) permutation
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(1))
    assert ids(a.val) == sorted(perm[:10].tolist())
    # the labels travel with their images
    full = data.load("mnist", data_dir=tmp_path, val_split=0)
    assert a.val.y.tolist() == full.train.y[ids(a.val)].tolist()


def test_val_split_count_and_limit(tmp_path):
    make_idx_set(tmp_path / "mnist", n_train=50, n_test=9)
    s = data.load("mnist", data_dir=tmp_path, val_split=7, seed=3)
    assert (len(s.train), len(s.val)) == (43, 7)
    lim = data.load("mnist", data_dir=tmp_path, val_split=7, seed=3, limit=5)
    assert (len(lim.train), len(lim.val), len(lim.test)) == (5, 7, 5)
    assert ids(lim.val) == ids(s.val)  # the split does not depend on limit
    assert ids(lim.train) == ids(s.train)[:5]
    assert torch.equal(lim.test.x, s.test.x[:5])


@pytest.mark.parametrize("bad", [1.0, -0.1, 50, -1, "0.1", True])
def test_bad_val_split_is_rejected(tmp_path, bad):
    make_idx_set(tmp_path / "mnist", n_train=50)
    with pytest.raises(DataError, match="val_split"):
        data.load("mnist", data_dir=tmp_path, val_split=bad)


def test_cache_sees_rewritten_files(tmp_path):
    make_idx_set(tmp_path / "mnist", n_train=30, seed=0)
    assert len(data.load("mnist", data_dir=tmp_path, val_split=0).train) == 30
    xtr, *_ = make_idx_set(tmp_path / "mnist", n_train=31, seed=5)
    again = data.load("mnist", data_dir=tmp_path, val_split=0)
    assert torch.equal(again.train.x[:, 0], torch.from_numpy(xtr).float() / 255)


# ----------------------------------------------------------------------------- IDX errors


def test_missing_dataset_names_dir_files_and_fix(tmp_path):
    with pytest.raises(DataError) as e:
        data.load("mnist", data_dir=tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "mnist") in msg and "train-images-idx3-ubyte" in msg and "biotp data fetch mnist" in msg


def test_partly_missing_dataset_lists_missing_file(tmp_path):
    make_idx_set(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"missing: t10k-labels-idx1-ubyte"):
        data.load("mnist", data_dir=tmp_path)


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("cut", [1, 100, 3000])
def test_truncated_idx_names_file(tmp_path, gz, cut):
    make_idx_set(tmp_path / "mnist", gz=False)
    target = tmp_path / "mnist" / IDX[0]
    payload = target.read_bytes()[:cut]
    target.unlink()
    bad = write(tmp_path / "mnist" / (IDX[0] + (".gz" if gz else "")), payload)
    with pytest.raises(DataError, match="truncated") as e:
        data.load("mnist", data_dir=tmp_path)
    assert str(bad) in str(e.value)


def test_truncated_gzip_stream_names_file(tmp_path):
    make_idx_set(tmp_path / "mnist")
    bad = tmp_path / "mnist" / (IDX[2] + ".gz")
    bad.write_bytes(bad.read_bytes()[:-30])
    with pytest.raises(DataError) as e:
        data.load("mnist", data_dir=tmp_path)
    assert str(bad) in str(e.value)


def test_trailing_bytes_are_rejected(tmp_path):
    make_idx_set(tmp_path / "mnist", gz=False)
    bad = tmp_path / "mnist" / IDX[1]
    bad.write_bytes(bad.read_bytes() + b"\0")
    with pytest.raises(DataError, match="trailing bytes") as e:
        data.load("mnist", data_dir=tmp_path)
    assert str(bad) in str(e.value)


def test_wrong_magic_names_file(tmp_path):
    make_idx_set(tmp_path / "mnist", gz=False)
    bad = tmp_path / "mnist" / IDX[0]
    bad.write_bytes(b"\x1f\x8b\x08\x03" + bad.read_bytes()[4:])
    with pytest.raises(DataError, match="magic number 0x1f8b0803") as e:
        data.load("mnist", data_dir=tmp_path)
    assert str(bad) in str(e.value)


def test_label_file_in_image_slot_is_rejected(tmp_path):
    make_idx_set(tmp_path / "mnist", gz=False)
    bad = tmp_path / "mnist" / IDX[2]
    bad.write_bytes((tmp_path / "mnist" / IDX[3]).read_bytes())  # magic 2049 where 2051 belongs
    with pytest.raises(DataError, match="0x00000803") as e:
        data.load("mnist", data_dir=tmp_path)
    assert str(bad) in str(e.value)


def test_count_mismatch_names_both_files(tmp_path):
    make_idx_set(tmp_path / "mnist", n_train=20)
    labels = tmp_path / "mnist" / (IDX[1] + ".gz")
    write(labels, idx_bytes(np.zeros(19, np.uint8)))
    with pytest.raises(DataError, match="20 images") as e:
        data.load("mnist", data_dir=tmp_path)
    assert str(labels) in str(e.value) and str(tmp_path / "mnist" / (IDX[0] + ".gz")) in str(e.value)


# ----------------------------------------------------------------------------- CIFAR-10 and ImageNet-32


def cifar_batch(path: Path, n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    y = rng.integers(0, 10, n).tolist()
    batch = {b"batch_label": b"batch", b"labels": y, b"data": x, b"filenames": [b"f.png"] * n}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(batch, protocol=2))
    return x, y


def make_cifar(folder: Path):
    train = [cifar_batch(folder / f"data_batch_{i}", 3, i) for i in range(1, 6)]
    test = cifar_batch(folder / "test_batch", 4, 99)
    return np.concatenate([t[0] for t in train]), sum((t[1] for t in train), []), test


@pytest.mark.parametrize("sub", ["cifar-10-batches-py", ""])
def test_cifar10_loader_channel_major(tmp_path, sub):
    xtr, ytr, (xte, yte) = make_cifar(tmp_path / "cifar10" / sub)
    s = data.load("cifar10", data_dir=tmp_path, val_split=0)
    assert s.train.x.shape == (15, 3, 32, 32) and s.test.x.shape == (4, 3, 32, 32)
    assert s.train.y.tolist() == ytr and s.test.y.tolist() == yte
    for n, c, i, j in [(0, 0, 0, 0), (4, 1, 5, 7), (14, 2, 31, 30), (7, 2, 0, 31)]:
        assert s.train.x[n, c, i, j].item() == xtr[n, c * 1024 + i * 32 + j] / np.float32(255)
    assert torch.equal(s.test.x[3, 1], torch.from_numpy(xte[3, 1024:2048].reshape(32, 32)).float() / 255)


def test_corrupt_cifar_batch_names_file(tmp_path):
    make_cifar(tmp_path / "cifar10")
    bad = tmp_path / "cifar10" / "data_batch_3"
    bad.write_bytes(b"this is not a pickle")
    with pytest.raises(DataError) as e:
        data.load("cifar10", data_dir=tmp_path)
    assert str(bad) in str(e.value)


def test_imagenet32_loader_one_based_labels(tmp_path):
    folder = tmp_path / "imagenet32"
    folder.mkdir()
    rng = np.random.default_rng(0)
    xs, ys = [], []
    for b in range(1, 11):
        x = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        y = [1, 1000] if b == 1 else rng.integers(1, 1001, 2).tolist()
        np.savez(folder / f"train_data_batch_{b}.npz", data=x, labels=y, mean=x.mean(0))
        xs.append(x)
        ys += y
    xv = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
    np.savez(folder / "val_data.npz", data=xv, labels=[5, 1, 1000])
    s = data.load("imagenet32", data_dir=tmp_path, val_split=0)
    xtr = np.concatenate(xs)
    assert s.train.x.shape == (20, 3, 32, 32) and s.test.x.shape == (3, 3, 32, 32) and s.train.n_classes == 1000
    assert s.train.y[:2].tolist() == [0, 999] and s.train.y.tolist() == [v - 1 for v in ys]
    assert s.test.y.tolist() == [4, 0, 999]
    for n, c, i, j in [(0, 0, 0, 0), (13, 2, 17, 3), (19, 1, 31, 31)]:
        assert s.train.x[n, c, i, j].item() == xtr[n, c * 1024 + i * 32 + j] / np.float32(255)
    assert torch.equal(s.test.x[2], torch.from_numpy(xv[2].reshape(3, 32, 32)).float() / 255)


def test_imagenet32_label_out_of_range_names_file(tmp_path):
    folder = tmp_path / "imagenet32"
    folder.mkdir()
    for b in range(1, 11):
        np.savez(folder / f"train_data_batch_{b}.npz", data=np.zeros((1, 3072), np.uint8), labels=[1])
    np.savez(folder / "val_data.npz", data=np.zeros((1, 3072), np.uint8), labels=[0])  # 0-based by mistake
    with pytest.raises(DataError, match="1..1000") as e:
        data.load("imagenet32", data_dir=tmp_path)
    assert str(folder / "val_data.npz") in str(e.value)


# ----------------------------------------------------------------------------- built-in datasets


def test_digits_offline():
    s = data.load("digits", val_split=0.1, seed=0)
    assert s.train.x.shape[1:] == (1, 8, 8) and s.train.n_classes == 10
    assert len(s.train) + len(s.val) + len(s.test) == 1797 and len(s.test) == 360
    for part in (s.train, s.val, s.test):
        assert part.x.min() >= 0 and part.x.max() <= 1
    assert s.train.x.max() == 1.0  # 16 / 16
    assert set(s.train.y.tolist()) == set(range(10))
    from sklearn.datasets import load_digits
    assert torch.equal(s.test.x[:, 0], torch.from_numpy(load_digits().images[-360:]).float() / 16)


def test_synthetic_deterministic_under_seed():
    a = data.load("synthetic", seed=4)
    b = data.load("synthetic", seed=4)
    c = data.load("synthetic", seed=5)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y) and torch.equal(a.val.x, b.val.x)
    assert not torch.equal(a.train.x, c.train.x)
    assert (len(a.train), len(a.val), len(a.test)) == (900, 100, 200)
    assert a.train.input_shape == (20,) and a.train.n_classes == 4
    assert 0 <= a.train.x.min() and a.train.x.max() <= 1
    assert torch.bincount(a.train.y, minlength=4).min() > 50  # every class present in reasonable numbers

    o = data.load("synthetic", seed=4, val_split=0, synthetic={"n_inputs": 5, "n_classes": 3, "n_train": 64,
                                                                "n_test": 16, "hidden": 8})
    assert o.train.x.shape == (64, 5) and o.test.x.shape == (16, 5) and o.train.n_classes == 3
    assert int(o.train.y.max()) <= 2


def test_synthetic_test_set_and_teacher_do_not_depend_on_n_train():
    a = data.load("synthetic", seed=1, synthetic={"n_train": 100})
    b = data.load("synthetic", seed=1, synthetic={"n_train": 300})
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.test.y, b.test.y)


def test_synthetic_bad_options():
    with pytest.raises(DataError, match="n_hidden"):
        data.load("synthetic", synthetic={"n_hidden": 3})
    with pytest.raises(DataError, match="n_classes"):
        data.load("synthetic", synthetic={"n_classes": 1})


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'svhn'"):
        data.load("svhn")


# ----------------------------------------------------------------------------- data_dir, available, describe


def test_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("BIOTP_DATA", raising=False)
    assert data.data_dir() == (tmp_path / "home" / ".biotp" / "data").resolve()
    monkeypatch.setenv("BIOTP_DATA", str(tmp_path / "env"))
    assert data.data_dir() == (tmp_path / "env").resolve()
    assert data.data_dir(tmp_path / "explicit") == (tmp_path / "explicit").resolve()


def test_available_and_describe(tmp_path):
    make_idx_set(tmp_path / "mnist")
    have = data.available(tmp_path)
    assert have == {"digits": True, "mnist": True, "fashion_mnist": False, "cifar10": False,
                    "imagenet32": False, "synthetic": True}
    table = data.describe(tmp_path)
    rows = {line.split()[0]: line for line in table.splitlines()[1:]}
    assert "present" in rows["mnist"] and str(tmp_path / "mnist") in rows["mnist"]
    assert "missing" in rows["cifar10"] and f"biotp data fetch cifar10 --data-dir {tmp_path}" in rows["cifar10"]
    assert "built-in" in rows["digits"] and "image-net.org" in rows["imagenet32"]


# ----------------------------------------------------------------------------- download and fetch


def serve(mapping: dict[str, bytes], log: list[str] | None = None):
    """An opener like urllib.request.urlopen that serves bytes by URL basename."""

    def opener(url, timeout=None):
        if log is not None:
            log.append(url)
        name = url.rsplit("/", 1)[-1]
        if name not in mapping:
            raise urllib.error.URLError(f"no route to {url}")
        return io.BytesIO(mapping[name])

    return opener


def test_download_file_url_good_checksum(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"hello biotp" * 1000)
    dest = tmp_path / "out" / "file.bin"
    got = data.download([src.as_uri()], dest, md5=hashlib.md5(src.read_bytes()).hexdigest())
    assert got == dest and dest.read_bytes() == src.read_bytes()
    assert os.listdir(dest.parent) == ["file.bin"]  # no temporary file left


def test_download_bad_checksum_leaves_nothing(tmp_path):
    dest = tmp_path / "out" / "file.bin"
    with pytest.raises(DataError, match="checksum mismatch") as e:
        data.download(["https://example.invalid/file.bin"], dest, md5="0" * 32,
                      urlopen=serve({"file.bin": b"tampered"}))
    assert "https://example.invalid/file.bin" in str(e.value) and str(dest.parent) in str(e.value)
    assert not dest.exists() and os.listdir(dest.parent) == []


def test_download_checks_decompressed_content_and_falls_back_to_next_mirror(tmp_path):
    payload = b"\x00\x00\x08\x01" + struct.pack(">I", 3) + b"\x01\x02\x03"
    good = gzip.compress(payload)
    log = []
    opener = serve({"a.gz": gzip.compress(b"other content"), "b.gz": good}, log)
    dest = data.download(["http://m1/a.gz", "http://m2/b.gz"], tmp_path / "x.gz",
                         md5=hashlib.md5(payload).hexdigest(), decompressed=True, urlopen=opener)
    assert log == ["http://m1/a.gz", "http://m2/b.gz"]
    assert dest.read_bytes() == good and os.listdir(tmp_path) == ["x.gz"]


def test_download_network_failure_names_url_and_dir(tmp_path, monkeypatch):
    def down(url, timeout=None):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(data, "_urlopen", down)  # the module-level injection point
    with pytest.raises(DataError) as e:
        data.download(["https://mirror.example/f.gz"], tmp_path / "d" / "f.gz", md5="0" * 32)
    assert "https://mirror.example/f.gz" in str(e.value) and str(tmp_path / "d") in str(e.value)
    assert os.listdir(tmp_path / "d") == []


def test_fetch_builtin_and_imagenet32(tmp_path):
    assert data.fetch("digits", tmp_path / "d") == (tmp_path / "d").resolve()
    assert data.fetch("synthetic", tmp_path / "d") == (tmp_path / "d").resolve()
    assert not (tmp_path / "d").exists()
    with pytest.raises(DataError, match="image-net.org") as e:
        data.fetch("imagenet32", tmp_path)
    assert str(tmp_path / "imagenet32") in str(e.value)


@pytest.mark.skipif(not REAL_MNIST.is_dir(), reason="real MNIST not available")
def test_fetch_mnist_with_injected_opener(tmp_path):
    served = {f + ".gz": (REAL_MNIST / (f + ".gz")).read_bytes() for f in IDX}
    log = []
    target = data.fetch("mnist", tmp_path, progress=False, urlopen=serve(served, log))
    assert target == (tmp_path / "mnist").resolve()
    assert sorted(os.listdir(target)) == sorted(f + ".gz" for f in IDX)
    assert len(log) == 4 and all(u.startswith("https://") for u in log)
    # everything present and verified: a second fetch downloads nothing
    assert data.fetch("mnist", tmp_path, progress=False, urlopen=serve({}, log)) == target and len(log) == 4
    assert data.available(tmp_path)["mnist"]


def test_fetch_mnist_bad_checksum_leaves_nothing(tmp_path):
    fake = {f + ".gz": gzip.compress(b"not mnist") for f in IDX}
    with pytest.raises(DataError, match="checksum mismatch") as e:
        data.fetch("mnist", tmp_path, progress=False, urlopen=serve(fake))
    assert "train-images-idx3-ubyte.gz" in str(e.value) and str(tmp_path / "mnist") in str(e.value)
    assert os.listdir(tmp_path / "mnist") == []


def test_fetch_cifar10_extracts_tarball(tmp_path, monkeypatch):
    src = tmp_path / "src" / "cifar-10-batches-py"
    xtr, ytr, (xte, yte) = make_cifar(src)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
    tarball = buf.getvalue()
    (real,) = data.REMOTES["cifar10"]
    assert real.md5 == "c58f30108f718f92721af3b95e74349a"
    monkeypatch.setitem(data.REMOTES, "cifar10",
                        (Remote(real.filename, real.urls, hashlib.md5(tarball).hexdigest(), False),))
    out = tmp_path / "data"
    target = data.fetch("cifar10", out, progress=False, urlopen=serve({"cifar-10-python.tar.gz": tarball}))
    assert target == (out / "cifar10").resolve()
    assert os.listdir(target) == ["cifar-10-batches-py"]  # tarball and temporary folder removed
    s = data.load("cifar10", data_dir=out, val_split=0)
    assert s.train.y.tolist() == ytr and torch.equal(s.test.x.reshape(4, -1), torch.from_numpy(xte).float() / 255)


def test_fetch_refuses_a_corrupt_existing_file(tmp_path):
    make_idx_set(tmp_path / "mnist")
    with pytest.raises(DataError, match="delete it") as e:
        data.fetch("mnist", tmp_path, progress=False, urlopen=serve({}))
    assert str(tmp_path / "mnist" / (IDX[0] + ".gz")) in str(e.value)


# ----------------------------------------------------------------------------- real MNIST


@pytest.mark.skipif(not REAL_MNIST.is_dir(), reason="real MNIST not available")
def test_real_mnist():
    full = data.load("mnist", data_dir=REAL_MNIST.parent, val_split=0)
    assert (len(full.train), len(full.val), len(full.test)) == (60000, 0, 10000)
    assert full.train.y[0].item() == 5 and full.train.y[:5].tolist() == [5, 0, 4, 1, 9]
    assert full.train.x.min() == 0 and full.train.x.max() == 1 and full.train.x.shape[1:] == (1, 28, 28)
    s = data.load("mnist", data_dir=REAL_MNIST.parent)
    assert (len(s.train), len(s.val), len(s.test)) == (54000, 6000, 10000)
    assert torch.bincount(s.val.y, minlength=10).min() > 400
