"""When things happen in a protocol: trial k occupies protocol time [k T, (k+1) T),
T = forward + target phase + inter-trial; which phase each trial belongs to, and which
interventions act on it."""

from __future__ import annotations

from typing import Any

from .schema import Protocol, StimulusSpec


def trial_time(spec, stimuli: StimulusSpec) -> float:
    """T: the forward and target phases of the dynamics `spec`, then the inter-trial blank."""
    return spec.forward_phase + spec.target_phase + (stimuli.inter_trial or 0.0)


class Timeline:
    """The trials of one protocol on the time axis, with their phases and interventions."""

    def __init__(self, protocol: Protocol, trial_time: float):
        self.protocol = protocol
        self.trial_time = trial_time
        self.phase_of = [ph.name for ph in protocol.phases for _ in range(ph.trials)] or ["all"] * protocol.trials

    def onset(self, k: int) -> float:
        """Protocol time (s) at which trial k starts."""
        return k * self.trial_time

    def phase_index(self, k: int) -> int:
        """Index of trial k's phase among the protocol's phases (0 without phases)."""
        names = [ph.name for ph in self.protocol.phases]
        return names.index(self.phase_of[k]) if names else 0

    def active(self, k: int) -> list[tuple[int, Any]]:
        """The interventions (index, spec) covering trial k: in one of their phases, and
        with the trial's onset inside their window."""
        onset = self.onset(k)
        out = []
        for i, iv in enumerate(self.protocol.interventions):
            if iv.phases is not None and self.phase_of[k] not in iv.phases:
                continue
            if iv.window is not None and not (iv.window[0] <= onset + 1e-12 < iv.window[1]):
                continue
            out.append((i, iv))
        return out
