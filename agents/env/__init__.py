"""The sound-matching environment: configuration, action/observation spaces, target bank and
the gymnax-style environment. ``from agents import env as E`` gives the public names."""

from agents.env.config import EnvConfig, default_max_delta, small_config
from agents.env.environment import (
           EnvParams,
           EnvState,
           SynthMatchEnv,
           effective_lambda,
           with_stage,
)
from agents.env.spaces import (
           Action,
           ActionError,
           Obs,
           apply_action,
           check_action,
           flatten_obs,
           scale_obs,
)
from agents.env.target_bank import (
           TargetBank,
           build_bank,
           build_heldout_bank,
           level_log_mel,
           with_paired_starts,
)

__all__ = ["EnvConfig", "default_max_delta", "small_config", "EnvParams", "EnvState", "SynthMatchEnv",
           "effective_lambda", "with_stage", "Action", "ActionError", "Obs", "apply_action",
           "check_action", "flatten_obs", "scale_obs", "TargetBank", "build_bank",
           "build_heldout_bank", "level_log_mel", "with_paired_starts"]
