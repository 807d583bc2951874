"""Datasets as in-memory torch tensors, and checksummed downloads.

Every split is a :class:`Dataset` with ``x`` float32 in [0, 1] and ``y`` int64 labels.
Files live under the data directory (``--data-dir`` > ``$BIOTP_DATA`` > ``~/.biotp/data``)::

    mnist/           train-images-idx3-ubyte[.gz]  train-labels-idx1-ubyte[.gz]
                     t10k-images-idx3-ubyte[.gz]   t10k-labels-idx1-ubyte[.gz]
    fashion_mnist/   the same four files
    cifar10/         cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch
    imagenet32/      train_data_batch_1.npz .. train_data_batch_10.npz, val_data.npz

``digits`` (bundled with scikit-learn) and ``synthetic`` (generated from the seed) need no files.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.client
import math
import numbers
import os
import pickle
import sys
import tarfile
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np
import torch

from biotp.errors import ConfigError, DataError

ENV_VAR = "BIOTP_DATA"
DEFAULT_DATA_DIR = Path("~/.biotp/data")


# ----------------------------------------------------------------------------- public types


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is and where its files go."""

    name: str
    title: str
    n_classes: int
    input_shape: tuple[int, ...]  # synthetic: the default shape
    subdir: str | None  # folder under the data directory; None for built-in datasets
    files: tuple[str, ...]  # the files load() needs, as shown in messages
    source: str


@dataclass(frozen=True, eq=False)
class Dataset:
    """One split in memory: ``x`` float32 in [0, 1] shaped [N, ...], ``y`` int64 labels [N]."""

    x: torch.Tensor
    y: torch.Tensor
    n_classes: int

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} examples but y has {self.y.shape[0]}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def n_inputs(self) -> int:
        return math.prod(self.input_shape)

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclass(frozen=True, eq=False)
class Splits:
    train: Dataset
    val: Dataset
    test: Dataset


_IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_IMAGENET32_FILES = tuple(f"train_data_batch_{i}.npz" for i in range(1, 11)) + ("val_data.npz",)
_IMAGENET32_URL = "https://image-net.org/download-images"

DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo("digits", "scikit-learn 8x8 digits", 10, (1, 8, 8), None, (), "scikit-learn"),
        DatasetInfo("mnist", "MNIST handwritten digits", 10, (1, 28, 28), "mnist",
                    tuple(f + "[.gz]" for f in _IDX_FILES), "LeCun et al."),
        DatasetInfo("fashion_mnist", "Fashion-MNIST (Zalando)", 10, (1, 28, 28), "fashion_mnist",
                    tuple(f + "[.gz]" for f in _IDX_FILES), "Zalando Research"),
        DatasetInfo("cifar10", "CIFAR-10", 10, (3, 32, 32), "cifar10",
                    tuple("cifar-10-batches-py/" + f for f in _CIFAR_FILES), "Krizhevsky 2009"),
        DatasetInfo("imagenet32", "downsampled ImageNet 32x32", 1000, (3, 32, 32), "imagenet32",
                    _IMAGENET32_FILES, "Chrabaszcz et al. 2017, " + _IMAGENET32_URL),
        DatasetInfo("synthetic", "random tanh-teacher task", 4, (20,), None, (), "generated from the seed"),
    )
}

# Folders (relative to data_dir/<subdir>) searched for each file, and whether name.gz also counts.
_SEARCH: dict[str, tuple[tuple[str, ...], tuple[str, ...], bool]] = {
    "mnist": (("", "raw"), _IDX_FILES, True),
    "fashion_mnist": (("", "raw"), _IDX_FILES, True),
    "cifar10": (("cifar-10-batches-py", ""), _CIFAR_FILES, False),
    "imagenet32": (("", "Imagenet32_train_npz", "Imagenet32_val_npz"), _IMAGENET32_FILES, False),
}


@dataclass(frozen=True)
class Remote:
    """One downloadable file: mirrors tried in order, and its md5
    (of the gunzipped content when ``decompressed``, else of the file as served)."""

    filename: str
    urls: tuple[str, ...]
    md5: str
    decompressed: bool


_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
_FASHION_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
# md5 of the decompressed IDX files (so any mirror's gzip encoding is accepted).
_IDX_MD5 = {
    "mnist": ("6bbc9ace898e44ae57da46a324031adb", "a25bea736e30d166cdddb491f175f624",
              "2646ac647ad5339dbf082846283269ea", "27ae3e4e09519cfbb04c329615203637"),
    "fashion_mnist": ("f4a8712d7a061bf5bd6d2ca38dc4d50a", "9018921c3c673c538a1fc5bad174d6f9",
                      "8181f5470baa50b63fa0f6fddb340f0a", "15d484375f8d13e6eb1aabb0c3f46965"),
}
REMOTES: dict[str, tuple[Remote, ...]] = {
    "mnist": tuple(Remote(f + ".gz", tuple(m + f + ".gz" for m in _MNIST_MIRRORS), h, True)
                   for f, h in zip(_IDX_FILES, _IDX_MD5["mnist"])),
    "fashion_mnist": tuple(Remote(f + ".gz", tuple(m + f + ".gz" for m in _FASHION_MIRRORS), h, True)
                           for f, h in zip(_IDX_FILES, _IDX_MD5["fashion_mnist"])),
    "cifar10": (Remote("cifar-10-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                       "c58f30108f718f92721af3b95e74349a", False),),
}


# ----------------------------------------------------------------------------- locations


def _resolve_data_dir(explicit: str | os.PathLike | None) -> Path:
    if explicit is not None and str(explicit) != "":
        path = Path(explicit)
    elif os.environ.get(ENV_VAR):
        path = Path(os.environ[ENV_VAR])
    else:
        path = DEFAULT_DATA_DIR
    return path.expanduser().resolve()


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """The data directory: ``explicit`` if given, else ``$BIOTP_DATA``, else ``~/.biotp/data``."""
    return _resolve_data_dir(explicit)


def _info(name: str) -> DatasetInfo:
    key = str(name).strip().lower().replace("-", "_")
    if key not in DATASETS:
        raise DataError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}")
    return DATASETS[key]


def _find_files(name: str, root: Path) -> tuple[dict[str, Path], list[str]]:
    """Map each needed file to the path found under root/<subdir>; also list the missing ones."""
    folders, files, gz_ok = _SEARCH[name]
    base = root / DATASETS[name].subdir
    found, missing = {}, []
    for f in files:
        candidates = [base / d / n for d in folders for n in ((f, f + ".gz") if gz_ok else (f,))]
        hit = next((p for p in candidates if p.is_file()), None)
        if hit is None:
            missing.append(f)
        else:
            found[f] = hit
    return found, missing


def _fix_hint(name: str, root: Path) -> str:
    if name == "imagenet32":
        return (f"ImageNet 32x32 needs an image-net.org login: sign in at {_IMAGENET32_URL}, download "
                f"Imagenet32_train_npz.zip and Imagenet32_val_npz.zip (downsampled images, npz) and unzip both "
                f"into {root / 'imagenet32'}, or point --data-dir/{ENV_VAR} at a directory that has them")
    return (f"run `biotp data fetch {name} --data-dir {root}` or point --data-dir/{ENV_VAR} "
            f"at a directory that has them")


def _require_files(name: str, root: Path) -> dict[str, Path]:
    found, missing = _find_files(name, root)
    if missing:
        info = DATASETS[name]
        base = root / info.subdir
        where = f"{base}" if base.is_dir() else f"{base} (no such directory)"
        gone = "" if not found else f" (missing: {', '.join(missing)})"
        raise DataError(f"dataset {name!r} not found in {where}: expected {', '.join(info.files)}{gone}; "
                        f"{_fix_hint(name, root)}")
    return found


# ----------------------------------------------------------------------------- parsers


_IDX_DTYPES = {
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read{' (corrupt gzip)' if path.name.endswith('.gz') else ''}: {e}") from e


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse one IDX file (gunzipped if its name ends in .gz) into an array of its declared dtype and dims.

    Raises DataError naming the file on a bad magic number, a truncated file or trailing bytes.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX file: {len(raw)} bytes, too short for the 4-byte magic number")
    if raw[0] or raw[1] or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataError(f"{path}: not an IDX file: magic number 0x{raw[:4].hex()}; expected 0x0000TTNN with type "
                        f"TT in {{08,09,0b,0c,0d,0e}} and NN >= 1 dimensions")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX file: {len(raw)} bytes, shorter than its {header}-byte header")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = math.prod(dims) * dtype.itemsize
    actual = len(raw) - header
    if actual != expected:
        what = "truncated IDX file" if actual < expected else "IDX file has trailing bytes"
        raise DataError(f"{path}: {what}: the header declares dims {dims} of {dtype.name} = {expected} data bytes, "
                        f"the file has {actual}")
    arr = np.frombuffer(raw, dtype, count=math.prod(dims), offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("=")) if dtype.byteorder == ">" else arr


class _Raw(NamedTuple):
    """Decoded arrays before splitting: x as stored (uint8, or float for synthetic), divided by `scale`."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    scale: float
    n_classes: int


def _idx_pair(images: Path, labels: Path, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = read_idx(images), read_idx(labels)
    if x.dtype != np.uint8 or x.ndim != 3:
        raise DataError(f"{images}: expected an image file (magic 0x00000803: unsigned bytes, 3 dims), "
                        f"found {x.dtype.name} with {x.ndim} dims")
    if y.dtype != np.uint8 or y.ndim != 1:
        raise DataError(f"{labels}: expected a label file (magic 0x00000801: unsigned bytes, 1 dim), "
                        f"found {y.dtype.name} with {y.ndim} dims")
    if len(x) != len(y):
        raise DataError(f"{images} has {len(x)} images but {labels} has {len(y)} labels")
    if len(y) and int(y.max()) >= n_classes:
        raise DataError(f"{labels}: label {int(y.max())} out of range 0..{n_classes - 1}")
    return x[:, None], y.astype(np.int64)


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except Exception as e:  # unpickling garbage can raise almost anything
        raise DataError(f"{path}: not a readable CIFAR-10 pickle batch ({type(e).__name__}: {e})") from e
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise DataError(f"{path}: expected keys b'data' and b'labels', found {sorted(map(repr, batch))}")
    data, labels = np.asarray(data), np.asarray(labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: b'data' should be uint8 [N, 3072], found {data.dtype.name} {list(data.shape)}")
    if labels.shape != (len(data),):
        raise DataError(f"{path}: {len(data)} images but labels of shape {list(labels.shape)}")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{path}: labels out of range 0..9 (found {labels.min()}..{labels.max()})")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _imagenet32_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "data" not in z.files or "labels" not in z.files:
                raise DataError(f"{path}: expected arrays 'data' and 'labels', found {z.files}")
            data, labels = z["data"], np.asarray(z["labels"])
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"{path}: not a readable npz file ({type(e).__name__}: {e})") from e
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: 'data' should be uint8 [N, 3072], found {data.dtype.name} {list(data.shape)}")
    labels = labels.reshape(-1)
    if len(labels) != len(data):
        raise DataError(f"{path}: {len(data)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 1 or labels.max() > 1000):
        raise DataError(f"{path}: labels should be 1-based in 1..1000, found {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64) - 1


def _stack(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])


@functools.lru_cache(maxsize=4)
def _decode(name: str, stamp: tuple[tuple[str, str, int, int], ...]) -> _Raw:
    """Decode a dataset's files; cached per process on (name, paths, sizes, mtimes)."""
    p = {key: Path(path) for key, path, _, _ in stamp}
    if name == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError as e:
            raise DataError("dataset 'digits' needs scikit-learn: pip install scikit-learn") from e
        d = load_digits()
        x, y = d.images.astype(np.uint8)[:, None], d.target.astype(np.int64)
        n_test = 360  # fixed split: the last 360 of the 1797 examples are the test set
        raw = _Raw(x[:-n_test], y[:-n_test], x[-n_test:], y[-n_test:], 16.0, 10)
    elif name in ("mnist", "fashion_mnist"):
        tr = _idx_pair(p["train-images-idx3-ubyte"], p["train-labels-idx1-ubyte"], 10)
        te = _idx_pair(p["t10k-images-idx3-ubyte"], p["t10k-labels-idx1-ubyte"], 10)
        raw = _Raw(*tr, *te, 255.0, 10)
    elif name == "cifar10":
        tr = _stack([_cifar_batch(p[f]) for f in _CIFAR_FILES[:-1]])
        raw = _Raw(*tr, *_cifar_batch(p["test_batch"]), 255.0, 10)
    elif name == "imagenet32":
        tr = _stack([_imagenet32_batch(p[f]) for f in _IMAGENET32_FILES[:-1]])
        raw = _Raw(*tr, *_imagenet32_batch(p["val_data.npz"]), 255.0, 1000)
    else:  # pragma: no cover - guarded by _info
        raise DataError(f"no decoder for dataset {name!r}")
    for a in raw[:4]:
        a.setflags(write=False)  # cached: callers get copies, never these arrays
    return raw


_SYNTHETIC_DEFAULTS = {"n_inputs": 20, "n_classes": 4, "n_train": 1000, "n_test": 200, "hidden": 32}


def _synthetic(seed: int, options: dict[str, Any] | None) -> _Raw:
    """Inputs uniform in [0,1]^D; labels = argmax of a random 2-layer tanh teacher; all from the seed."""
    opts = dict(_SYNTHETIC_DEFAULTS)
    unknown = sorted(set(options or {}) - set(opts))
    if unknown:
        raise DataError(f"unknown synthetic option(s) {unknown}: expected some of {sorted(opts)}")
    opts.update(options or {})
    for key, value in opts.items():
        low = 2 if key == "n_classes" else 1
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise DataError(f"synthetic option {key}={value!r}: expected an integer >= {low}")
    d, c, h = int(opts["n_inputs"]), int(opts["n_classes"]), int(opts["hidden"])
    teacher_seq, train_seq, test_seq = np.random.SeedSequence(int(seed) & (2**64 - 1)).spawn(3)
    t = np.random.default_rng(teacher_seq)
    w1 = t.standard_normal((d, h)) * math.sqrt(12.0 / d) * 1.5  # pre-activation std ~1.5
    b1 = t.standard_normal(h) * 0.5
    w2 = t.standard_normal((h, c)) / math.sqrt(h)
    ref = np.tanh((t.random((4096, d)) - 0.5) @ w1 + b1) @ w2
    b2 = -ref.mean(axis=0)  # centre the logits so that no class dominates

    def draw(seq: np.random.SeedSequence, n: int) -> tuple[np.ndarray, np.ndarray]:
        x = np.random.default_rng(seq).random((n, d)).astype(np.float32)
        logits = np.tanh((x.astype(np.float64) - 0.5) @ w1 + b1) @ w2 + b2
        return x, logits.argmax(axis=1).astype(np.int64)

    return _Raw(*draw(train_seq, int(opts["n_train"])), *draw(test_seq, int(opts["n_test"])), 1.0, c)


# ----------------------------------------------------------------------------- load


def _val_count(val_split: float | int, n: int) -> int:
    if isinstance(val_split, bool) or not isinstance(val_split, numbers.Real):
        raise DataError(f"data.val_split: {val_split!r}: expected a fraction in [0, 1) or a count of training examples")
    if isinstance(val_split, numbers.Integral):
        count = int(val_split)
        if not 0 <= count < n:
            raise DataError(f"data.val_split: {count}: expected a count in 0..{n - 1} "
                            f"(the training set has {n} examples)")
        return count
    if not 0.0 <= float(val_split) < 1.0:
        raise DataError(f"data.val_split: {val_split!r}: expected a fraction in [0, 1) or an integer count")
    return min(int(round(float(val_split) * n)), n - 1)


def load(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    val_split: float | int = 0.1,
    seed: int = 0,
    limit: int | None = None,
    synthetic: dict[str, Any] | None = None,
) -> Splits:
    """Load a dataset as train/val/test splits of float32 tensors in [0, 1].

    ``val_split`` (a fraction in [0, 1) or an integer count) takes validation examples out of the
    training set by a ``torch.Generator`` permutation seeded with ``seed`` alone; both parts keep the
    original order. ``limit`` then keeps the first ``limit`` examples of train and of test (not of val).
    ``synthetic`` holds the options of the synthetic task (n_inputs, n_classes, n_train, n_test, hidden).
    """
    info = _info(name)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, numbers.Integral) or limit < 1):
        raise DataError(f"data.limit: {limit!r}: expected None or an integer >= 1")
    if info.name == "synthetic":
        raw = _synthetic(seed, synthetic)
    elif info.name == "digits":
        raw = _decode("digits", ())
    else:
        found = _require_files(info.name, _resolve_data_dir(data_dir))
        stamp = tuple((k, str(p), p.stat().st_size, p.stat().st_mtime_ns) for k, p in sorted(found.items()))
        raw = _decode(info.name, stamp)

    n = len(raw.y_train)
    n_val = _val_count(val_split, n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).numpy()
    val_idx, train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    test_idx = np.arange(len(raw.y_test))
    if limit is not None:
        train_idx, test_idx = train_idx[:limit], test_idx[:limit]

    def split(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> Dataset:
        xs = x[idx].astype(np.float32) / np.float32(raw.scale)
        return Dataset(torch.from_numpy(xs), torch.from_numpy(y[idx].astype(np.int64)), raw.n_classes)

    return Splits(split(raw.x_train, raw.y_train, train_idx), split(raw.x_train, raw.y_train, val_idx),
                  split(raw.x_test, raw.y_test, test_idx))


# ----------------------------------------------------------------------------- download


_urlopen: Callable[..., Any] = urllib.request.urlopen  # module-level injection point for tests



def load_for(circuit, data_dir: str | os.PathLike | None = None) -> Splits:
    """The splits a circuit's `data:` block names (dataset, validation split, limit, the
    synthetic task's options), shuffled into validation by the circuit's seed: the one
    loader of training, simulation, continuous-time training and protocols."""
    d = circuit.data
    try:
        return load(d.dataset, data_dir=data_dir, val_split=d.val_split, seed=circuit.seed, limit=d.limit,
                    synthetic=d.synthetic.model_dump())
    except DataError as err:  # a split the circuit asks for that this dataset cannot give: the circuit's key
        if not str(err).startswith("data."):
            raise
        raise ConfigError(f"{circuit.source or '<circuit>'}: {err}") from None


def _md5_file(path: Path, gunzip: bool = False) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with (gzip.open(path, "rb") if gunzip else open(path, "rb")) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _progress_bar(total: Any, label: str) -> Any:
    from .progress import bar

    size = int(total) if total and str(total).isdigit() else None
    return bar(total=size, unit="B", unit_scale=True, desc=label, file=sys.stderr, leave=False, lines="close")


def download(
    urls: Sequence[str],
    dest: str | os.PathLike,
    *,
    md5: str,
    decompressed: bool = False,
    urlopen: Callable[..., Any] | None = None,
    progress: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Fetch ``dest`` from the first of ``urls`` whose content has the given md5, atomically.

    The md5 is of the gunzipped content when ``decompressed``, else of the bytes as served. Each URL
    streams into a hidden temporary file beside ``dest`` that is renamed only once the checksum
    matches; on failure nothing is left behind and DataError names every URL tried and the directory.
    ``urlopen`` (default: the module's ``_urlopen``) is called as ``urlopen(url, timeout=...)``.
    """
    dest = Path(dest)
    opener = urlopen or _urlopen
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the data directory {dest.parent}: {e}") from e
    failures = []
    for url in urls:
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            h = hashlib.md5(usedforsecurity=False)
            with os.fdopen(fd, "wb") as out, opener(url, timeout=timeout) as response:
                headers = getattr(response, "headers", None)
                size = headers.get("Content-Length") if headers else None
                bar = _progress_bar(size, dest.name) if progress else None
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    h.update(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                if bar is not None:
                    bar.close()
            digest = _md5_file(tmp, gunzip=True) if decompressed else h.hexdigest()
            if digest != md5:
                what = "the decompressed content" if decompressed else "the download"
                failures.append(f"{url}: checksum mismatch, md5 of {what} is {digest}, expected {md5}")
                continue
            os.replace(tmp, dest)
            return dest
        except (OSError, EOFError, zlib.error, ValueError, http.client.HTTPException) as e:
            failures.append(f"{url}: {type(e).__name__}: {e}")
        finally:
            tmp.unlink(missing_ok=True)
    raise DataError(f"could not download {dest.name} into {dest.parent}: {'; '.join(failures)}; "
                    f"check the network, or place the file there by hand")


def _extract_cifar(tarball: Path, target: Path) -> None:
    """Unpack cifar-10-batches-py/ from the tarball into target, via a temporary folder."""
    try:
        with tempfile.TemporaryDirectory(dir=target, prefix=".extract-") as tmp, \
                tarfile.open(tarball, "r:gz") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, filter="data")
            else:  # pragma: no cover - Python without extraction filters
                tar.extractall(tmp)
            src = Path(tmp) / "cifar-10-batches-py"
            if not src.is_dir():
                raise DataError(f"{tarball}: has no cifar-10-batches-py/ folder")
            dest = target / "cifar-10-batches-py"
            if not dest.exists():
                os.replace(src, dest)
            else:
                for f in src.iterdir():
                    os.replace(f, dest / f.name)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{tarball}: cannot extract: {e}") from e


def fetch(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    progress: bool = True,
    urlopen: Callable[..., Any] | None = None,
) -> Path:
    """Download a dataset into the data directory, verifying checksums; return its folder.

    Files already present are checked, not downloaded again. digits and synthetic need nothing.
    imagenet32 needs a login: DataError says where to get it, unless it is already in place.
    """
    info = _info(name)
    root = _resolve_data_dir(data_dir)
    if info.subdir is None:
        return root
    target = root / info.subdir
    found, missing = _find_files(info.name, root)
    if info.name in ("cifar10", "imagenet32") and not missing:
        return target  # complete; no per-file checksums are published for these files
    if info.name == "imagenet32":
        raise DataError(f"dataset 'imagenet32' cannot be fetched automatically. {_fix_hint('imagenet32', root)}")
    if info.name == "cifar10":
        (remote,) = REMOTES["cifar10"]
        tarball = download(remote.urls, target / remote.filename, md5=remote.md5,
                           urlopen=urlopen, progress=progress)
        _extract_cifar(tarball, target)
        tarball.unlink()
        return target
    for stem, remote in zip(_IDX_FILES, REMOTES[info.name]):
        if stem in found:
            have = _checked_md5(found[stem])
            if have != remote.md5:
                raise DataError(f"{found[stem]} exists but the md5 of its content is {have}, not the expected "
                                f"{remote.md5}; delete it and run `biotp data fetch {info.name}` again")
            continue
        download(remote.urls, target / remote.filename, md5=remote.md5, decompressed=True,
                 urlopen=urlopen, progress=progress)
    return target


def _checked_md5(path: Path) -> str:
    try:
        return _md5_file(path, gunzip=path.name.endswith(".gz"))
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read (delete it and fetch again): {e}") from e


# ----------------------------------------------------------------------------- listing


def available(data_dir: str | os.PathLike | None = None) -> dict[str, bool]:
    """Which datasets can be loaded from the data directory (built-in ones always can)."""
    root = _resolve_data_dir(data_dir)
    return {name: info.subdir is None or not _find_files(name, root)[1] for name, info in DATASETS.items()}


def describe(data_dir: str | os.PathLike | None = None) -> str:
    """A table for `biotp data list`: name, status, path, and how to get each dataset."""
    root = _resolve_data_dir(data_dir)
    present = available(root)
    flag = "" if root == _resolve_data_dir(DEFAULT_DATA_DIR) else f" --data-dir {root}"
    rows = [("name", "status", "path", "get it with")]
    for name, info in DATASETS.items():
        if info.subdir is None:
            rows.append((name, "built-in", f"({info.source})", "-"))
            continue
        how = f"biotp data fetch {name}{flag}"
        if name == "imagenet32":
            how = f"manual download ({_IMAGENET32_URL}); see {how}"
        rows.append((name, "present" if present[name] else "missing", str(root / info.subdir), how))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3] for r in rows]
    return f"data directory: {root}\n" + "\n".join(line.rstrip() for line in lines)
