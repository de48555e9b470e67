"""Penalties on loading blocks (one block = one modality's column of one component)."""

from .block_group import BlockGroupPenalty, pair_noise_levels

__all__ = ["BlockGroupPenalty", "pair_noise_levels"]
