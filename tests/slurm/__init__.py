"""Test helpers that run a real one-node Slurm cluster on this machine."""
