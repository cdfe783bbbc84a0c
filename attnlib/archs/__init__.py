"""Model families (`arch`), an axis beside the variants: GPT-2 small and a decoder of Llama-3.2-1B's shape, each
built by attnlib and chosen by name as a variant is (`attnlib.build_model(variant, arch=...)`); what is specific to
one family (its sizes, its block order, where it keeps its attention) lives in its module (`base` says which)."""

from .base import ARCHS, ArchSpec, Dims, arch_of, dims_of, get_arch

__all__ = ["ARCHS", "ArchSpec", "Dims", "arch_of", "dims_of", "get_arch"]
