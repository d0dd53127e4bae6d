"""SALMU-synth: generation, storage and input pipelines."""
