"""OpenVLA-architecture models: config, towers, processor, action tokens, loading."""

from .action_tokenizer import ActionTokenizer
from .config import ViTConfig, VLAConfig
from .loading import build_vla_from_config, load_vla, save_vla
from .processor import ImageProcessor
from .vla import OpenVLA, VLAOutput

__all__ = ["ActionTokenizer", "ImageProcessor", "OpenVLA", "VLAConfig", "VLAOutput", "ViTConfig",
           "build_vla_from_config", "load_vla", "save_vla"]
