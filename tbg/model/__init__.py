"""Model pieces: relation operators, comparators, the shared score function, losses, negatives, optimizers."""
