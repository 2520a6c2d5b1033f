"""Ground-truth segmentation masks from VIA annotations (section 12.4 of the book).

    python3 utils/generate_gt_segmentation.py -j segmentation_train.json -p dataset/drinks \
        --save-filename segmentation_train.npy

`--help` lists the options; the tool is `segmentation.tools.ground_truth.main`.
"""

import sys

from segmentation.quiet import quiet_start

if __name__ == "__main__":
    with quiet_start(sys.argv[1:]):
        from segmentation.tools.ground_truth import main
    sys.exit(main())
