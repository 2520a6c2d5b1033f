"""--head-filters: the head's width is a choice, the book's 256 the default, and weights keep their width."""

import pytest
from conftest import TINY, WEIGHTS

from model import HEAD_FILTERS, build_model
from segmentation.checkpoints import head_filters_of_model, head_filters_of_weights, read_best_metrics


@pytest.mark.parametrize("head_filters, parameters", [
    (None, 11_120_900),  # no width given: the book's network
    (HEAD_FILTERS, 11_120_900),
    (128, 7_578_244),
    (64, 6_249_284),
    (32, 5_695_396),
])
def test_parameter_counts_of_each_width_at_the_book_s_depth(head_filters, parameters):
    widths = {} if head_filters is None else {"head_filters": head_filters}
    backbone, fcn = build_model((480, 640, 3), n_layers=3, n_classes=4, **widths)
    assert fcn.count_params() == parameters
    # The backbone and its pyramid are the book's whatever the head's width.
    assert backbone.count_params() == 5_215_232
    assert head_filters_of_model(fcn) == (head_filters or HEAD_FILTERS)


def test_the_head_needs_a_filter():
    with pytest.raises(ValueError, match="head_filters=0"):
        build_model((64, 64, 3), n_layers=1, n=1, head_filters=0)


def test_weights_of_another_width_are_refused_naming_both(trained_run, run_cli):
    # The shared tiny run trained with --head-filters 8; the later --head-filters of an argv wins.
    book_width = ["--head-filters", str(HEAD_FILTERS)]
    weights = str(trained_run.save_dir / WEIGHTS)
    assert head_filters_of_weights(weights) == 8
    assert read_best_metrics(weights)["settings"]["head_filters"] == 8

    status, _, err = run_cli(["--evaluate", "--restore-weights", WEIGHTS, *trained_run.flags, *book_width])
    assert status == 2
    assert f"{weights}: these weights have a 8-filter head and the network a 256-filter one; " \
           "give --head-filters 8 to load them." in err
    status, _, err = run_cli(["--evaluate", "--restore-weights", WEIGHTS, *trained_run.flags])
    assert status == 0, err

    # The width is one of the settings --resume checks, and a new run of another width does not replace
    # the best weights unasked.
    status, _, err = run_cli([*trained_run.resume(trained_run.epochs + 1), "--head-filters", "16"])
    assert status == 2 and "head_filters" in err
    status, _, err = run_cli(["--train", "--epochs", "1", "--seed", "0", *trained_run.flags, *book_width])
    assert status == 2
    assert "best weights of a 8-filter head with the book decoder are in the way of this run's 256-filter" in err
    assert head_filters_of_weights(weights) == 8


@pytest.mark.parametrize("value", ["0", "-4"])
def test_bad_width_is_refused(book_dataset, run_cli, value):
    data_path, _ = book_dataset
    status, _, err = run_cli(["--train", *TINY, "--data-path", data_path, "--head-filters", value])
    assert status == 2 and f"--head-filters {value}: must be at least 1" in err
