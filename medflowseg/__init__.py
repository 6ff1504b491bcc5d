"""MedFlowSeg: flow-matching medical image segmentation (arXiv 2604.19675 v2).

This package holds the method only; it imports nothing from ``benchmark``.
``medflowseg.flow`` has the flow-matching parts (path, loss, ODE solver, label encoding, and the
flow-matching method with its training draw and sampling loop) that every flow model of the suite
shares; ``medflowseg.sampling`` has ``Samples``, what every method's ``sample`` returns;
``medflowseg.model`` has MedFlowSeg and its ablation variants; ``DESIGN.md`` maps each module to the
paper and lists the choices the paper leaves open.
"""
