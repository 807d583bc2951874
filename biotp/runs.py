"""Run files: one run, one HDF5 file, written atomically.

Layout (readable by any HDF5 tool):
  /                 attrs: biotp_version, seed, command, created, circuit_yaml, kind, ...
  /metrics/<name>   1-D float64 per epoch (epoch, train_loss, ..., angle_<layer>)
  /traces/<population>/<variable>   [time, example, neuron], attrs: times, time_unit, unit
  /checkpoint/...   parameters, optimiser state, RNG state; attrs: epoch
  /<any>/...        further groups (settling residuals, sweep points) as nested mappings;
                    a mapping's "@attrs" entry holds its group's attributes

The file is written whole to `<name>.tmp-<pid>` and renamed over the old one, so an
interrupted write never leaves a corrupt run file: the last complete version survives.
One process writes a run file at a time: `claim` takes an advisory lock (`<name>.lock`,
flock, the holder's pid inside) that a second writer is refused by; the operating system
drops it when the holder dies, so a killed run never blocks the next one, which also
removes the temporary files killed writers left.
"""

from __future__ import annotations

import datetime
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import h5py
import numpy as np
import yaml

from .errors import BiotpError, RunFileError

Tree = Mapping[str, Any]  # leaves: arrays, or Leaf(array, attrs); inner nodes: mappings


@dataclass
class Leaf:
    """An array with HDF5 attributes (e.g. a trace with its times and units)."""

    data: Any
    attrs: dict = field(default_factory=dict)


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version as v

    try:
        return v("biotp")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def run_attrs(circuit, command: str | None = None, **extra) -> dict:
    """The root attributes every run file carries."""
    return {
        "biotp_version": version(),
        "seed": circuit.seed,
        "command": command if command is not None else " ".join(sys.argv),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "circuit_yaml": circuit.to_yaml(),
        **extra,
    }


def check_same_circuit(stored, circuit, path) -> None:
    """A run file is resumed (and extended to more epochs) only with the circuit it was made
    with: else a BiotpError naming each field that differs, stored -> given."""
    stored_tree = _flat(yaml.safe_load(stored.to_yaml()))
    given = _flat(yaml.safe_load(circuit.with_updates(f"schedule.epochs={stored.schedule.epochs}").to_yaml()))
    diff = [f"{k}: {stored_tree.get(k)!r} -> {given.get(k)!r}" for k in sorted(set(stored_tree) | set(given))
            if stored_tree.get(k) != given.get(k)]
    if diff:
        shown = "; ".join(diff[:5]) + (f"; and {len(diff) - 5} more" if len(diff) > 5 else "")
        raise BiotpError(f"{path}: a resumed run keeps the configuration it was made with (only the epochs may grow); "
                         f"this command changes {shown}. Write a new run (another --out) to change them")


def _flat(tree, prefix: str = "") -> dict:
    """{'a.b.0.c': leaf} of nested mappings and lists of mappings (so a difference names its key)."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}
    if isinstance(tree, list) and any(isinstance(x, (dict, list)) for x in tree):
        return {k: v for i, sub in enumerate(tree) for k, v in _flat(sub, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): tree}


def resumed_attrs(previous: Mapping[str, Any], attrs: dict) -> dict:
    """A resumed run's root attributes: the first command and creation time kept, each
    resume appended to `resumes` (time and command), so the file tells its whole history."""
    entry = f"{attrs['created']} {attrs['command']}"
    history = str(previous.get("resumes", "")).strip()
    return {**attrs, "command": previous.get("command", attrs["command"]),
            "created": previous.get("created", attrs["created"]),
            "resumes": f"{history}\n{entry}".strip()}


def _as_array(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


ATTRS = "@attrs"  # a mapping's key holding its group's HDF5 attributes


def _write_tree(group: h5py.Group, tree: Tree) -> None:
    for key, value in tree.items():
        key = str(key)
        if key == ATTRS:
            for k, v in value.items():
                group.attrs[k] = v
            continue
        if isinstance(value, Mapping):
            _write_tree(group.require_group(key), value)
            continue
        attrs = {}
        if isinstance(value, Leaf):
            value, attrs = value.data, value.attrs
        arr = _as_array(value)
        kwargs = {"compression": "gzip", "compression_opts": 4} if arr.size > 4096 else {}
        ds = group.create_dataset(key, data=arr, **kwargs)
        for k, v in attrs.items():
            ds.attrs[k] = v


_CLAIMS: dict[Path, list] = {}  # run file -> [lock file descriptor, claims by this process]


def claim(path: str | Path) -> None:
    """Take the run file `path` for this process (again: a no-op, counted), or raise a
    BiotpError naming the process that holds it; temporary files of dead writers go."""
    import fcntl

    path = Path(path).resolve()
    if path in _CLAIMS:
        _CLAIMS[path][1] += 1
        return
    if path.is_dir():
        raise BiotpError(f"{path}: is a directory; expected the path of a run file to write (e.g. {path}/run.h5)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BiotpError(f"{path}: cannot create the directory {path.parent} ({err.strerror}); expected a writable "
                         f"place for the run file") from None
    lock = path.with_name(path.name + ".lock")
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise BiotpError(f"{path}: cannot write in {path.parent} ({err.strerror}); expected a writable place "
                             f"for the run file") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise BiotpError(f"{path}: another process (pid {holder}) is writing this run file; wait for it to "
                             f"finish or write elsewhere (--out)") from None
        try:  # the lock file we hold must still be the one at its path (a releaser unlinks it)
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _CLAIMS[path] = [fd, 1]
    left = [*path.parent.glob(f"{path.name}.tmp-*"), *path.parent.glob(f"{path.stem}.tmp-*{path.suffix}")]
    for tmp in left:  # by writers that were killed (atomic_output's names)
        pid = tmp.name.rsplit(".tmp-", 1)[1].removesuffix(path.suffix)
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def release(path: str | Path) -> None:
    """Give back one claim on `path`; the last one unlocks it and removes the lock file."""
    path = Path(path).resolve()
    held = _CLAIMS.get(path)
    if held is None:
        return
    held[1] -= 1
    if held[1] == 0:
        del _CLAIMS[path]
        path.with_name(path.name + ".lock").unlink(missing_ok=True)  # before unlocking: see claim
        os.close(held[0])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def atomic_output(path: str | Path, keep_suffix: bool = False) -> Iterator[Path]:
    """A temporary path beside `path` to write to (`<name>.tmp-<pid>`, or with `keep_suffix`
    `<stem>.tmp-<pid><suffix>` for writers that check it); once the block succeeds it is
    fsynced and renamed over `path`, so an interrupted write never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp-{os.getpid()}{path.suffix}" if keep_suffix
                         else f"{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_run(path: str | Path, attrs: Mapping[str, Any], tree: Tree) -> Path:
    """Write the whole run file atomically: temporary file, flush, fsync, rename -- claimed
    for the write unless the caller holds it (`claim`) across its epochs already."""
    path = Path(path)
    own = path.resolve() not in _CLAIMS
    if own:
        claim(path)
    try:
        with atomic_output(path) as tmp:
            with h5py.File(tmp, "w") as f:
                for k, v in attrs.items():
                    f.attrs[k] = v if v is not None else ""
                _write_tree(f, tree)
                f.flush()
    finally:
        if own:
            release(path)
    return path


def attributes(node: h5py.Group | h5py.Dataset) -> dict:
    """A group's or dataset's HDF5 attributes, strings decoded."""
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in node.attrs.items()}


def _read_tree(group: h5py.Group) -> dict:
    out = {ATTRS: attributes(group)} if len(group.attrs) and not isinstance(group, h5py.File) else {}
    for key, item in group.items():
        if isinstance(item, h5py.Group):
            out[key] = _read_tree(item)
        else:
            data = item[()]
            out[key] = Leaf(data, dict(item.attrs)) if len(item.attrs) else data
    return out


@dataclass
class Run:
    """A run file read back: root attributes and every group as nested dicts of arrays."""

    path: Path
    attrs: dict
    groups: dict

    @property
    def metrics(self) -> dict[str, np.ndarray]:
        return self.groups.get("metrics", {})

    @property
    def traces(self) -> dict:
        return self.groups.get("traces", {})

    @property
    def checkpoint(self) -> dict:
        return self.groups.get("checkpoint", {})

    @property
    def circuit(self):
        from .circuit import parse_circuit
        import yaml

        if "circuit_yaml" not in self.attrs:
            raise RunFileError(f"{self.path}: no root attribute circuit_yaml (the circuit the run was made with; "
                               f"attributes: {', '.join(sorted(self.attrs)) or 'none'}); expected a run file written "
                               f"by biotp train, simulate, run or compare")
        return parse_circuit(yaml.safe_load(self.attrs["circuit_yaml"]), f"{self.path}:/circuit_yaml")

    def metrics_table(self) -> str:
        """The per-epoch metrics as an aligned text table."""
        return metrics_table(self.metrics)


def metrics_table(metrics: Mapping[str, Any]) -> str:
    """Columns of equal length as an aligned text table (`trial`/`epoch` columns first)."""
    names = sorted(metrics, key=lambda n: (n not in ("epoch", "trial", "time", "phase"), n not in ("epoch", "trial")))
    if not names:
        return "(no metrics)"
    return aligned([names] + [[_fmt(metrics[n][i]) for n in names] for i in range(len(metrics[names[0]]))])


def aligned(rows: list[list[str]], left: tuple[int, ...] = ()) -> str:
    """Rows of cells as text, each column aligned to its widest cell: right (numbers) but the
    columns `left` (text)."""
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if j in left else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))).rstrip()
                     for r in rows)


def _fmt(x) -> str:
    x = float(x)
    if x != x:
        return "nan"
    return str(int(x)) if x.is_integer() and abs(x) < 1e9 else f"{x:.4g}"


@contextmanager
def run_file(path: str | Path, expected: str | None = None) -> Iterator[h5py.File]:
    """A run file open for reading, its datasets left on disk until sliced (for files too
    large to read whole); a missing or non-HDF5 file is a BiotpError naming it (and what
    was `expected` instead)."""
    path = Path(path)
    wanted = f"; expected {expected}" if expected else ""
    if not path.exists():
        raise BiotpError(f"{path}: no such run file{wanted}")
    if path.is_dir():
        raise BiotpError(f"{path}: a directory, not a run file{wanted or '; expected an HDF5 file'}")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise BiotpError(f"{path}: not a readable HDF5 run file ({err}){wanted}") from None
    with f:
        yield f


def copy_record(source: str | Path, target: str | Path) -> None:
    """Copy a run file without its /checkpoint: the record of the run (attributes, metrics,
    traces) without the state it would resume from, a few kilobytes where the checkpoint
    holds megabytes of parameters and optimiser state.  Written atomically."""
    with run_file(source) as f, atomic_output(target) as scratch, h5py.File(scratch, "w") as g:
        for key, value in f.attrs.items():
            g.attrs[key] = value
        g.attrs["record_of"] = "the run file without /checkpoint (it cannot be resumed)"
        for name in f:
            if name != "checkpoint":
                f.copy(f[name], g, name=name)


def open_run(path: str | Path) -> Run:
    """Read a run file written by biotp (or any file with the same layout)."""
    path = Path(path)
    with run_file(path) as f:
        try:
            attrs = attributes(f)
            groups = _read_tree(f)
        except OSError as err:
            raise BiotpError(f"{path}: not a readable HDF5 run file ({err})") from None
    return Run(path, attrs, groups)
