"""Sensor models: transport delay, first-order lag, drift, bias, Gaussian noise, quantisation.

Drift is absolute (``drift_per_week``, sensor units) and/or a gain drift (``drift_frac_per_week``,
a share of the reading, as electrochemical DO probes drift); both default to 0.

Pure and deterministic for a given :class:`random.Random`. The lag uses the exact discretisation
of a first-order system, so a step reading can be checked against 1 - exp(-t/t63).
"""

from __future__ import annotations

import math
import random
from collections import deque

from simulators.vessel import SensorSection

SECONDS_PER_WEEK = 7 * 24 * 3600.0


class SensorModel:
    """One sensor sampled every ``dt_s``.

    Args:
        spec: Lag, noise, drift, bias and resolution, in the sensor's units.
        dt_s: Sample period, s.
        delay_s: Transport delay in front of the sensor, s (rounded to whole samples).
        rng: Random source for noise (share one per plant for reproducibility).
        initial: True value at the start (the sensor starts settled on it).
    """

    def __init__(
        self, spec: SensorSection, dt_s: float, delay_s: float, rng: random.Random, initial: float
    ) -> None:
        self.spec = spec
        self.rng = rng
        steps = max(0, round(delay_s / dt_s))
        self._line: deque[float] = deque([initial] * steps, maxlen=steps) if steps else deque()
        self._alpha = 1.0 - math.exp(-dt_s / spec.t63_s) if spec.t63_s > 0 else 1.0
        self._drift_per_sample = spec.drift_per_week * dt_s / SECONDS_PER_WEEK
        self._gain_drift_per_sample = spec.drift_frac_per_week * dt_s / SECONDS_PER_WEEK
        self.lagged = initial
        self.drift = 0.0
        self.gain = 1.0
        self.stuck: float | None = None
        self._bias = spec.bias
        self._noise_sd = spec.noise_sd
        self._gauss = rng.gauss
        self._res = spec.resolution
        self._delayed = bool(steps)

    def sample(self, true_value: float) -> float:
        """Feed the current true value; return what the sensor reports now."""
        if self._delayed:
            line = self._line
            delayed = line[0]
            line.append(true_value)
        else:
            delayed = true_value
        lagged = self.lagged = self.lagged + (delayed - self.lagged) * self._alpha
        self.drift += self._drift_per_sample
        if self.stuck is not None:
            return self.stuck
        if self._gain_drift_per_sample:
            self.gain += self._gain_drift_per_sample
            value = lagged * self.gain + self.drift + self._bias
        else:
            value = lagged + self.drift + self._bias
        if self._noise_sd > 0:
            value += self._gauss(0.0, self._noise_sd)
        res = self._res
        if res > 0:
            value = round(value / res) * res
        return value
