"""Coordinator side: the Flower ServerApp, strategies, round loop and checkpoints."""
