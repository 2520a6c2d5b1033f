"""Plot a per-epoch metric history (Figures 12.5.1 and 12.5.2).

    python3 utils/plot_history.py --history weights/miou_history.npy

`--help` lists the options; the tool is `segmentation.tools.history_plot.main`.
"""

import sys

from segmentation.quiet import quiet_start

if __name__ == "__main__":
    with quiet_start(sys.argv[1:]):
        from segmentation.tools.history_plot import main
    sys.exit(main())
