"""utils/plot_history.py: Figures 12.5.1 and 12.5.2 from saved histories."""

import numpy as np

from segmentation.tools import history_plot


def test_plots_any_number_of_epochs_and_prints_the_max(tmp_path, capsys):
    history = tmp_path / "miou_history.npy"
    np.save(history, np.array([0.2, 0.5, 0.4, 0.61, 0.6, 0.3, 0.58]))
    assert history_plot.main(["--history", str(history)]) == 0
    out = capsys.readouterr().out
    assert "Max: 0.6100 at epoch 4 of 7" in out
    assert (tmp_path / "miou_history.npy.png").stat().st_size > 1000


def test_pixel_accuracy_history(tmp_path, capsys):
    history = tmp_path / "mpla_history.npy"
    np.save(history, np.linspace(50, 97.9, 130))
    assert history_plot.main(["--history", str(history)]) == 0
    assert "Max: 97.9000 at epoch 130 of 130" in capsys.readouterr().out


def test_bad_history_files_are_refused(tmp_path, capsys):
    assert history_plot.main(["--history", str(tmp_path / "none.npy")]) == 2
    empty = tmp_path / "empty.npy"
    np.save(empty, np.array([]))
    assert history_plot.main(["--history", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "none.npy: no such file" in err and "empty.npy: expected a non-empty" in err
