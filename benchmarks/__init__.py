"""diffseg3d benchmarks (issue #6): speed and memory of the training step, inference and a
straightforward reference U-Net; run by `make bench` (`python -m benchmarks.run`), not by tests."""
