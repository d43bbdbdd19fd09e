"""The robustness audit: attack registry, attack runs, evidence, verdict."""
