"""Evaluation: the matcher registry, the harness (one table for every matcher at equal render
budgets) and matching one audio file."""
