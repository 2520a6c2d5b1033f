"""Train and evaluate the chapter 12 FCN for semantic segmentation.

The command line of *Advanced Deep Learning with Keras*, chapter 12, on Keras 3:

    python3 fcn-12.3.1.py --train
    python3 fcn-12.3.1.py --evaluate --restore-weights=ResNet56v2-3layer-drinks-best-iou.h5
    python3 fcn-12.3.1.py --evaluate --restore-weights=... --image-file=dataset/drinks/0010018.jpg

The script only hands its arguments to `segmentation.cli`, which can be imported.
"""

import sys

from segmentation.kernels import prefer_onednn
from segmentation.quiet import quiet_start

if __name__ == "__main__":
    # Before anything imports TensorFlow: its oneDNN CPU kernels, and its start-up lines left out unless
    # asked for (`--verbose 2`).
    prefer_onednn()
    with quiet_start(sys.argv[1:]):
        from segmentation import cli
    sys.exit(cli.main(sys.argv[1:]))
