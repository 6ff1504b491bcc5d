"""The method interface and the registry of methods by name."""
from benchmark.methods.interface import SegmentationMethod
from benchmark.methods.registry import ENTRY_POINT_GROUP, UnknownMethodError, available_methods, build_method

__all__ = ["SegmentationMethod", "ENTRY_POINT_GROUP", "UnknownMethodError", "available_methods", "build_method"]
