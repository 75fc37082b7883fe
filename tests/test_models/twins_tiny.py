"""A tiny Twins architecture for the compile, export and dtype tests: four
stages, two blocks each, a few dozen channels, so that compiling or
exporting it takes seconds."""
TINY = dict(
    embed_dims=[16, 32, 32, 64],
    depths=[2, 2, 2, 2],
    num_heads=[1, 2, 2, 4],
    mlp_ratios=[2, 2, 2, 2],
    sr_ratios=[8, 4, 2, 1])
TINY_SVT = dict(TINY, window_sizes=[7, 7, 7, 7])
