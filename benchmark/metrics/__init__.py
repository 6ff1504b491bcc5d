"""Segmentation metrics: Dice, IoU and HD95 with explicit spacing, HD95 and empty-mask conventions."""
from benchmark.metrics.segmentation import EmptyPolicy, case_metrics, dice, hd95, iou

__all__ = ["EmptyPolicy", "case_metrics", "dice", "hd95", "iou"]
