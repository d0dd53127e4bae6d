"""Unlearning: objectives as pure loss transforms, parameter transforms, and methods."""
