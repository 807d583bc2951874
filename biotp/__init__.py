"""biotp: continuous-time simulation and discrete training of target-propagation circuits.

    >>> import biotp
    >>> circuit = biotp.load_circuit("circuits/mlp.yaml")
    >>> run = biotp.train(circuit, out="runs/mlp.h5")
    >>> biotp.open_run("runs/mlp.h5").metrics["test_error"]
"""

from .circuit import Circuit, load_circuit
from .errors import BiotpError, ConfigError, DataError, DivergenceError
from .runs import open_run
from .simulation import simulate
from .training import train

__all__ = ["BiotpError", "Circuit", "ConfigError", "DataError", "DivergenceError", "load_circuit", "open_run", "train"]
