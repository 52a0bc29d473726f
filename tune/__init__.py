"""Ray Tune sweeps: the sweep spec, its search space, the trial trainable, the driver, its
results and plots (their benchmarks: `depthkd.bench.sweep`)."""
