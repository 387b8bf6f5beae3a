"""What a compiled program costs, read off the optimized HLO text XLA made of it.

- `hlo_text`: the instructions of an HLO module text (names, shapes, attributes, callees);
- `flops`: floating-point operations and bytes counted from the shapes of its convolutions,
  dots and kernels, with loop trip counts; `compiled_flops` of a `jax.stages.Compiled`;
- `hlo_convs`: what XLA made of the convolutions, and the verdict on the pathological form
  (the kernel gradient of a transposed conv run as a huge forward conv over zeros);
- `roofline`: the lower bound of a program's time on a device, from its FLOPs and bytes.
"""
