"""The ground truth: what each module reads.

- `splits`: a run's splits, each a book label file or a PNG mask folder, read and checked together.
- `book_labels`: the book's `.npy` label files.
- `pickled_npy`: the pickle inside a book label file, walked opcode by opcode, never unpickled.
- `mask_folders`: folders of PNG class-index masks, and the class names stored beside the labels.
- `fit_to_size`: images of any size fitted to the network's input (`--fit-size`).
"""
