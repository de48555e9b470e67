"""The model layer: the simulation engine and the reference designs."""

from . import designs, engine

from .designs import (
    D1_DIMS,
    PUBLISHED_DIMS,
    d1_hierarchy,
    d1_model,
    model_from_singular_values,
    modality_names,
    published_hierarchy,
)
from .engine import LATENT_LAWS, STUDENT_T_DF, HierarchicalModel, draw_latent, draw_noise_variances, published_block

__all__ = engine.__all__ + designs.__all__
