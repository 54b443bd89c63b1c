"""Pure JAX, no I/O: networks, the generator and teacher, learners, the differentiable inner
loop, plain training and scoring, metrics, costs, optimisers and device sharding."""
