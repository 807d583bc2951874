"""The benchmark scripts' own measuring tools."""

import importlib.util
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_product_flops_counts_two_m_n_k_per_product_with_and_without_out():
    fastpath = _load("fastpath")
    x, w, b = torch.randn(5, 7), torch.randn(3, 7), torch.randn(3)
    out = torch.empty(5, 3)
    with fastpath.ProductFlops() as counter:
        torch.addmm(b, x, w.T, out=out)
        y = x @ w.T
        torch.tanh(y)  # not a product: not counted
        torch.bmm(torch.randn(2, 5, 7), torch.randn(2, 7, 3))
    assert counter.flops == 2 * 5 * 3 * 7 * (1 + 1 + 2)
    torch.testing.assert_close(out, b + x @ w.T)
