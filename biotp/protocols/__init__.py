"""Protocols: neuroscience-style experiments on a circuit, run by `biotp run PROTOCOL`.

A protocol names a circuit (with overrides) and sets out what the experimenter does:

  stimuli        which examples (split, count, order), how many side by side per trial
                 (`batch`), the presentation (forward and target phase) and inter-trial times
  phases         named blocks of consecutive trials (baseline, lesion, recovery, ...)
  interventions  clamp, silence, lesion, block_plasticity, noise, beta -- each active in a
                 window: named phases, a protocol-time window, and the part of each trial
                 (`during`: forward, target or all)
  record         populations and variables to trace, sampling interval, which trials
  evaluate       error on held-out data every N trials
  reference      `discrete`: run the discrete rule the settled dynamics compute beside the
                 continuous one, from the same weights, on the same examples
  sweep          a grid or list of parameter values; each point is one group of the file
  figure         the summary figure `biotp plot` draws (sweep, phases, settling, reference,
                 rules); inferred from the rest when absent
  engine         torch or brian2 (the continuous model), or discrete (the fast path)

Trial k occupies protocol time [k T, (k+1) T), T = forward + target phase + inter-trial.

  schema         the protocol file's specs; parse_protocol, load_protocol
  sweep          the sweep's points, each with its protocol and circuit resolved
  timeline       which phase each trial is in, which interventions act on it
  interventions  active interventions as the engine takes them
  runner         run_protocol: the trial loop, the discrete reference
  results        the run file's layout, ProtocolRun, resuming a file
"""

from .results import ProtocolRun
from .runner import ContinuousRun, run_protocol
from .schema import (ENGINES, FIGURES, KINDS, Beta, BlockPlasticity, Clamp, EvaluateSpec, FigureSpec, Intervention,
                     Lesion, Noise, PhaseSpec, Protocol, RecordSpec, Silence, StimulusSpec, SweepSpec, load_protocol, parse_protocol)
from .sweep import Point, points

__all__ = ["ENGINES", "FIGURES", "FigureSpec", "KINDS", "Beta", "BlockPlasticity", "Clamp", "ContinuousRun",
           "EvaluateSpec", "Intervention", "Lesion", "Noise", "PhaseSpec", "Point", "Protocol", "ProtocolRun", "RecordSpec", "Silence", "StimulusSpec",
           "SweepSpec", "load_protocol", "parse_protocol", "points", "run_protocol"]
