"""What changes over a training run: the learning rate and the teacher-forcing ratio.

Both follow ``progress``: how far the run is through its epochs or through its time budget
(``train.max_minutes``), whichever is further, so a time-budgeted run anneals by the end of its
budget rather than by an epoch count it never reaches. Pure functions of the ``train`` section.
"""

from __future__ import annotations

import math

from pipeline.config import Train


def lr_factor(cfg: Train, step: int, progress: float) -> float:
    """Multiplier of train.lr at optimiser step ``step`` (0-based). ``progress`` (0 to 1) is how far
    training is: through its epochs, or through ``max_minutes``, whichever is further; so a time-budgeted
    schedule anneals by the end of the budget instead of by an epoch count it never reaches."""
    s, warm = step + 1, cfg.warmup_steps
    if cfg.scheduler == "noam":  # linear warmup, then 1/sqrt(step); peaks at lr
        return min(s / max(warm, 1), math.sqrt(max(warm, 1) / s))
    if warm and s <= warm:
        return s / warm
    if cfg.scheduler == "cosine":
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))  # down to 10% of lr
    if cfg.scheduler == "wsd":
        # warmup-stable-decay: the full rate until the last ``decay_fraction`` of the run, then down to 0 in
        # the "1 - sqrt" shape, which Hägele et al. (2024) found to match cosine at any length; the stable
        # phase keeps the high-rate progress that a cosine over a short budget gives away early
        into_decay = (progress - (1.0 - cfg.decay_fraction)) / cfg.decay_fraction
        return 1.0 - math.sqrt(min(max(into_decay, 0.0), 1.0))
    return 1.0


def progress(cfg: Train, step: int, total_steps: int, seconds: float) -> float:
    """How far training is, 0 to 1, after the warmup: through its steps, or through its time budget
    (``seconds`` of training so far against ``max_minutes``), whichever is further."""
    warm = cfg.warmup_steps
    by_steps = (step - warm) / max(total_steps - warm, 1)
    by_time = seconds / (60 * cfg.max_minutes) if cfg.max_minutes else 0.0
    return min(max(by_steps, by_time, 0.0), 1.0)


def teacher_forcing(cfg: Train, step: int, progress: float) -> float:
    """Probability of feeding the gold previous token (scheduled sampling, Bengio et al. 2015). ``linear``
    decays over the same ``progress`` as the learning rate (epochs or time budget, whichever is further),
    so it reaches its floor at the end of a time-budgeted run too; ``inverse_sigmoid`` is defined by its
    ``sampling_k`` in steps."""
    if cfg.scheduled_sampling == "linear":
        return max(cfg.teacher_forcing_min, 1.0 - (1.0 - cfg.teacher_forcing_min) * progress)
    if cfg.scheduled_sampling == "inverse_sigmoid":
        k = cfg.sampling_k
        return max(cfg.teacher_forcing_min, k / (k + math.exp(min(step / k, 50.0))))
    return 1.0
