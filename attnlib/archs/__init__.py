"""Model families (`arch`), an axis beside the variants: GPT-2 small and a decoder of Llama-3.2-1B's shape, each
built by attnlib and chosen by name as a variant is (`attnlib.build_model(variant, arch=...)`)."""

from .base import ARCHS, ArchSpec, get_arch

__all__ = ["ARCHS", "ArchSpec", "get_arch"]
