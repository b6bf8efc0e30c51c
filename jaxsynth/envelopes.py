"""ADSR envelopes in closed form (no recurrence), so they are exact to the sample, cheap to
evaluate at any set of times, and differentiable in every time and level.

Segments are linear in amplitude, as in torchsynth's ADSR with alpha = 1: attack 0 -> 1 over
``attack_s``; decay 1 -> ``sustain`` over ``decay_s``; sustain until the note-off; release
from the level reached at note-off (also mid-attack or mid-decay) to 0 over ``release_s``.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float


def _pre_release(t, attack_s, decay_s, sustain):
    attack = t / attack_s
    decay = 1.0 - (1.0 - sustain) * (t - attack_s) / decay_s
    return jnp.where(t < attack_s, attack, jnp.where(t < attack_s + decay_s, decay, sustain))


def adsr(t_s: Float[Array, "times"], attack_s, decay_s, sustain, release_s,
         note_off_s) -> Float[Array, "times"]:
    """Envelope level in [0, 1] at times ``t_s`` (seconds since note-on)."""
    held = _pre_release(t_s, attack_s, decay_s, sustain)
    level_at_off = _pre_release(note_off_s, attack_s, decay_s, sustain)
    released = level_at_off * jnp.maximum(1.0 - (t_s - note_off_s) / release_s, 0.0)
    return jnp.clip(jnp.where(t_s < note_off_s, held, released), 0.0, 1.0)
