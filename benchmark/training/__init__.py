"""Training with Accelerate: one script for a CPU process, gloo processes, or NCCL GPUs."""
