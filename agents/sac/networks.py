"""Flax networks for hybrid SAC: encoders, a two-head actor and twin per-module critics.

Observation layout the networks take (``NetObs``): ``flat`` (any vector: delta features,
params01, ...) and optionally ``image`` (frames, n_mels, channels): the current and target
log-mel stacked as channels. The MLP encoder flattens and concatenates both; the CNN
encoder convolves the image and concatenates the flat part (MLP vs CNN: benchmarks/RESULTS.md,
"MLP vs CNN encoder").

Actor: shared trunk -> masked categorical logits over modules + tanh-squashed Gaussian over
the delta vector (Delalleau et al. 2019, "Discrete and continuous action representation for
practical RL in video games", arXiv:1912.11077). Critic: Q(obs, delta) -> one Q per module;
two critics in one ``nn.vmap`` ensemble (Fujimoto et al. 2018 clipped double Q).
"""

from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0
MASKED_LOGIT = -1e9  # logit given to locked modules: exp underflows to exactly 0 probability


@flax.struct.dataclass
class NetObs:
    flat: Float[Array, "*b d"]
    image: Optional[Float[Array, "*b frames n_mels channels"]] = None


class MLP(nn.Module):
    hidden: Sequence[int]
    layer_norm: bool = True

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = nn.Dense(width)(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = nn.relu(x)
        return x


class MLPEncoder(nn.Module):
    """Flatten everything (~5k dims for the synth) and project to ``features`` dims."""

    features: int = 256

    @nn.compact
    def __call__(self, obs: NetObs):
        parts = [obs.flat]
        if obs.image is not None:
            parts.append(obs.image.reshape(obs.image.shape[:-3] + (-1,)))
        x = jnp.concatenate(parts, axis=-1)
        return nn.relu(nn.LayerNorm()(nn.Dense(self.features)(x)))


class CNNEncoder(nn.Module):
    """Three stride-2 3x3 convolutions over (frames, n_mels, channels), then a projection."""

    features: int = 256
    channels: Sequence[int] = (16, 32, 32)

    @nn.compact
    def __call__(self, obs: NetObs):
        if obs.image is None:
            raise ValueError("CNN encoder needs an image (log-mel) part; use the MLP encoder")
        x = obs.image
        batch_shape = x.shape[:-3]
        x = x.reshape((-1,) + x.shape[-3:])
        for c in self.channels:
            x = nn.relu(nn.Conv(c, (3, 3), strides=(2, 2))(x))
        x = x.reshape(batch_shape + (-1,))
        x = jnp.concatenate([x, obs.flat], axis=-1)
        return nn.relu(nn.LayerNorm()(nn.Dense(self.features)(x)))


def make_encoder(kind: str, features: int) -> nn.Module:
    if kind == "mlp":
        return MLPEncoder(features)
    if kind == "cnn":
        return CNNEncoder(features)
    raise ValueError(f"unknown encoder {kind!r}: use 'mlp' or 'cnn'")


class Actor(nn.Module):
    """Shared trunk -> (masked module logits, delta mean, delta log-std)."""

    n_modules: int
    n_delta: int
    encoder: str = "mlp"
    hidden: Sequence[int] = (256, 256)

    @nn.compact
    def __call__(self, obs: NetObs, mask: Bool[Array, "*b n_modules"]):
        h = MLP(self.hidden)(make_encoder(self.encoder, self.hidden[0])(obs))
        logits = nn.Dense(self.n_modules)(h)
        mean = nn.Dense(self.n_delta)(h)
        raw = nn.Dense(self.n_delta)(h)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (jnp.tanh(raw) + 1.0)
        return masked_logits(logits, mask), mean, log_std


class Critic(nn.Module):
    """Q(obs, delta) -> one value per module."""

    n_modules: int
    encoder: str = "mlp"
    hidden: Sequence[int] = (256, 256)

    @nn.compact
    def __call__(self, obs: NetObs, delta: Float[Array, "*b n_delta"]):
        h = make_encoder(self.encoder, self.hidden[0])(obs)
        h = MLP(self.hidden)(jnp.concatenate([h, delta], axis=-1))
        return nn.Dense(self.n_modules)(h)


class TwinCritic(nn.Module):
    """Two independent critics; output (2, *b, n_modules)."""

    n_modules: int
    encoder: str = "mlp"
    hidden: Sequence[int] = (256, 256)

    @nn.compact
    def __call__(self, obs: NetObs, delta):
        ens = nn.vmap(Critic, variable_axes={"params": 0}, split_rngs={"params": True},
                      in_axes=None, out_axes=0, axis_size=2)
        return ens(self.n_modules, self.encoder, self.hidden)(obs, delta)


# ---------------------------------------------------------------------------------------
# Distributions (pure functions)


def masked_logits(logits: Float[Array, "*b k"], mask: Bool[Array, "*b k"]) -> Float[Array, "*b k"]:
    """Locked modules get ``MASKED_LOGIT``; if a mask is all False every module stays allowed
    (a no-op guard so probabilities stay finite)."""
    any_allowed = jnp.any(mask, axis=-1, keepdims=True)
    mask = jnp.where(any_allowed, mask, True)
    return jnp.where(mask, logits, MASKED_LOGIT)


def categorical_probs_logprobs(logits: Float[Array, "*b k"]):
    """Probabilities and log-probabilities; locked entries have p = 0 and log p = 0 so that
    p * log p terms are exactly 0 rather than 0 * -inf."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    probs = jnp.exp(logp)
    logp = jnp.where(logits <= MASKED_LOGIT / 2, 0.0, logp)
    return probs, logp


def tanh_gaussian_sample(key, mean, log_std, per_dim: bool = False):
    """Reparameterised sample of tanh(N(mean, std)) and its log-density (Haarnoja et al. 2018,
    appendix C), using log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)) for stability.
    ``per_dim``: return the log-density of each (independent) entry instead of their sum."""
    std = jnp.exp(log_std)
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    u = mean + std * eps
    log_normal = -0.5 * (eps ** 2 + jnp.log(2 * jnp.pi)) - log_std
    log_det = 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))
    logp = log_normal - log_det
    return jnp.tanh(u), (logp if per_dim else jnp.sum(logp, axis=-1))
