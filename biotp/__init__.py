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

from .circuit import Circuit, load_circuit
from .errors import BiotpError, ConfigError, DataError, DivergenceError
from .protocols import load_protocol, run_protocol
from .runs import open_run
from .simulation import simulate
from .training import train



def __getattr__(name):  # matplotlib is imported only when figures are wanted
    if name == "plot":
        from .plots import plot

        return plot
    raise AttributeError(f"module 'biotp' has no attribute {name!r}")


__all__ = ["BiotpError", "Circuit", "ConfigError", "DataError", "DivergenceError", "load_circuit",
           "load_protocol", "open_run", "plot", "run_protocol", "simulate", "train"]
