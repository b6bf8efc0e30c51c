"""Budgeted matchers: what they share (``common``), random search, gradient matching, CMA-ES."""
