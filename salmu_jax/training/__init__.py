"""Optimizer steps over pure loss functions: state, optimizers, the step, the run setup
(mesh, model, shardings, data) and the pretraining loop of the reference models."""
