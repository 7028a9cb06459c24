"""QuantNAS search: its settings, supernet, BitMixer modes, alpha losses and the search loop."""
from .config import SearchConfig
from .run import embedded_pairs, search
from .supernet import MODES, MixedLayer, Supernet, qnoise_scale

__all__ = ["MODES", "MixedLayer", "SearchConfig", "Supernet", "embedded_pairs", "qnoise_scale", "search"]
