"""biotp: continuous-time simulation and discrete training of target-propagation circuits.

    >>> import biotp
    >>> circuit = biotp.load_circuit("circuits/mlp.yaml")
    >>> run = biotp.train(circuit, out="runs/mlp.h5")
    >>> biotp.open_run("runs/mlp.h5").metrics["test_error"]
    >>> biotp.run_protocol("protocols/feedback_lesion.yaml", out="runs/lesion.h5")
    >>> from biotp.compare import compare     # (a function of its own module)
    >>> compare(circuit, "bp,dtp", epochs=5, out="runs/cmp.h5")
    >>> biotp.plot("runs/lesion.h5", out="figures")
"""

import importlib
import importlib.util

# name -> module that defines it; imported on first use, so `import biotp.config` (no torch)
# stays light and `import biotp` costs nothing until something is called
_PUBLIC = {
    "Circuit": "circuit", "load_circuit": "circuit",
    "BiotpError": "config.errors", "ConfigError": "config.errors", "DataError": "config.errors",
    "DivergenceError": "config.errors",
    "load_protocol": "protocols", "run_protocol": "protocols",
    "open_run": "runs", "simulate": "simulation", "train": "training",
    "plot": "plots",  # matplotlib is imported only when figures are wanted
}


def __getattr__(name):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f".{_PUBLIC[name]}", __name__), name)
        globals()[name] = value
        return value
    if importlib.util.find_spec(f"{__name__}.{name}") is not None:  # a submodule: biotp.protocols.points(...)
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'biotp' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_PUBLIC})


__all__ = ["BiotpError", "Circuit", "ConfigError", "DataError", "DivergenceError", "load_circuit",
           "load_protocol", "open_run", "plot", "run_protocol", "simulate", "train"]
