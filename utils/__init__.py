"""The book's command-line tools (run as `python3 utils/<tool>.py`) and the VIA format they share."""
