"""Hybrid SAC: config, networks, replay, losses, the compiled trainer, teacher data, probe
environments, the training run (host loop), checkpoints, run logs and the loaded policy."""
