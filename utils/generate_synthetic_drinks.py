"""A synthetic stand-in for the book's "drinks" data set (section 12.4; a project addition).

    python3 utils/generate_synthetic_drinks.py --output dataset/synthetic --check --show

`--help` lists the options; the tool is `segmentation.tools.synthetic.main`.
"""

import sys

from segmentation.quiet import quiet_start

if __name__ == "__main__":
    with quiet_start(sys.argv[1:]):
        from segmentation.tools.synthetic import main
    sys.exit(main())
