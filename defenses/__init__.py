"""Defenses: adversarial training and input preprocessing (see the defenses issue)."""
