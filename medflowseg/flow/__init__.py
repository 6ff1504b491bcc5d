"""Flow matching, one concept per module: the probability path, the loss, the ODE solver, label encoding,
and the flow-matching method (its hooks, training draw and sampling loop) that every flow model shares."""
from medflowseg.flow.labels import decode_labels, encode_labels
from medflowseg.flow.loss import VELOCITY_LOSSES, velocity_l1, velocity_mse
from medflowseg.flow.matching import FlowMatchingMethod, FlowStep
from medflowseg.flow.path import LinearPath, PathSample
from medflowseg.flow.solver import FIXED_STEP_SOLVERS, ODESolver, SolveResult

__all__ = ["LinearPath", "PathSample", "velocity_l1", "velocity_mse", "VELOCITY_LOSSES", "ODESolver", "SolveResult",
           "FIXED_STEP_SOLVERS", "encode_labels", "decode_labels", "FlowMatchingMethod", "FlowStep"]
