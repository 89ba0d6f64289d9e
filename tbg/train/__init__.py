"""Training: bucket scheduler, partition swapping/prefetch, batch step, run loop, checkpoints."""
