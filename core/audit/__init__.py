"""The robustness audit: attack catalogue, attack runs, evidence, verdict."""
