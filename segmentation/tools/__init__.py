"""The data tools of `utils/`: VIA projects, the `.npy` ground truth, the synthetic set, history figures.

Training and evaluation never import this subpackage: `utils/generate_gt_segmentation.py` runs
`ground_truth`, `utils/generate_synthetic_drinks.py` runs `synthetic` (checked by `synthetic_check`),
`utils/plot_history.py` runs `history_plot`; `via` reads and writes the VIA JSON projects they share.
"""
