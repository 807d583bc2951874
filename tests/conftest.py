import numpy as np
import pytest

TIMING = ("seconds", "examples_per_s")  # wall-clock columns: the only ones a resume may change


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a slow test (e.g. compiles brian2's cython target)")


def assert_same_tree(a: dict, b: dict, where: str) -> None:
    """Nested dicts of arrays equal key for key and bit for bit (NaN equal to NaN)."""
    assert a.keys() == b.keys(), (where, sorted(a), sorted(b))
    for key in a:
        if isinstance(a[key], dict):
            assert_same_tree(a[key], b[key], f"{where}/{key}")
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{where}/{key}")


@pytest.fixture
def interrupted(tmp_path):
    """Factory: `interrupted(train, circuit, split, total, **flags)` trains `circuit` for `total`
    epochs in one go, and for `split` epochs then resumed to `total` from the run file alone (the
    flags are given to the first runs only: the file must remember them); it asserts that the two
    runs' metrics (wall-clock columns aside) and final checkpoints (weights, optimiser state,
    random generators) are equal, and returns (whole, resumed) for further checks."""
    def run(train, circuit, split, total, **flags):
        name = f"{len(list(tmp_path.glob('whole*.h5')))}"
        whole = train(circuit, epochs=total, out=tmp_path / f"whole{name}.h5", progress=False, **flags)
        train(circuit, epochs=split, out=tmp_path / f"part{name}.h5", progress=False, **flags)
        resumed = train(resume=tmp_path / f"part{name}.h5", epochs=total, progress=False)
        assert list(resumed.metrics["epoch"]) == list(whole.metrics["epoch"])
        assert_same_tree({k: v for k, v in whole.metrics.items() if k not in TIMING},
                         {k: v for k, v in resumed.metrics.items() if k not in TIMING}, "metrics")
        assert_same_tree(whole.checkpoint, resumed.checkpoint, "checkpoint")
        assert "resumes" not in whole.attrs and len(resumed.attrs["resumes"].splitlines()) == 1  # the file says so
        return whole, resumed
    return run
