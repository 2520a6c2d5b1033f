"""Train and evaluate the chapter 12 FCN for semantic segmentation.

The command line of *Advanced Deep Learning with Keras*, chapter 12, on Keras 3:

    python3 fcn-12.3.1.py --train
    python3 fcn-12.3.1.py --evaluate --restore-weights=ResNet56v2-3layer-drinks-best-iou.h5
    python3 fcn-12.3.1.py --evaluate --restore-weights=... --image-file=dataset/drinks/0010018.jpg

The script only hands its arguments to `segmentation.cli`, which can be imported.
"""

import sys

from segmentation import cli

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))
