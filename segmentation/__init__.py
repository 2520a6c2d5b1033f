"""The machinery of the chapter 12 FCN's command line: configuration, data, training, evaluation, output.

The book's own files stay at the repository's root (`model.py`, `resnet.py`, `data_generator.py`);
`segmentation.cli` is the program that `fcn-12.3.1.py` runs. Nothing is imported here: the entry points
import `segmentation.quiet` first, before anything loads TensorFlow.
"""
