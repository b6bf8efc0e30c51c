"""agents: the sound-matching environment, matchers (CMA-ES, gradient, SAC) and their CLIs."""
