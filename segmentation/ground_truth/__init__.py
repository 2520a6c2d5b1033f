"""The ground truth: each module named for what it reads.

- `splits`: a run's splits, whatever each one's format, read and checked against each other.
- `book_labels`: the book's `.npy` label files.
- `pickled_npy`: the pickle inside a book label file, walked opcode by opcode, never unpickled.
- `mask_folders`: folders of PNG class-index masks.
- `class_names`: the class-names files stored beside either format.
- `label_set`: no file: the in-memory class-index maps every format is read into.
- `fit_to_size`: images of any size, fitted to the network's input (`--fit-size`).
"""
