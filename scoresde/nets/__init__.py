"""ε-networks ``net(x, t)`` with continuous ``t ∈ [0, 1]`` of shape ``(B,)``; they know nothing of SDEs."""

from scoresde.nets.embeddings import GaussianFourierFeatures, LabelEmbedding, TimeEmbedding, sinusoidal_embedding
from scoresde.nets.mlp import MLP
from scoresde.nets.unet import UNet, count_parameters

__all__ = ["MLP", "UNet", "TimeEmbedding", "LabelEmbedding", "GaussianFourierFeatures", "sinusoidal_embedding",
           "count_parameters"]
