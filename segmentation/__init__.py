"""The machinery of the chapter 12 FCN's command line: configuration, data, training, evaluation, output.

The book's own files stay at the repository's root (`model.py`, `resnet.py`, `data_generator.py`);
`segmentation.cli` is the program that `fcn-12.3.1.py` runs.
"""

import os

# Quiet TensorFlow's start-up banner unless the user asked for it; set before any module imports Keras.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
