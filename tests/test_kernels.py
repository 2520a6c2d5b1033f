"""TensorFlow's oneDNN CPU kernels are asked for unless the user chose."""

from segmentation.kernels import ONEDNN_VARIABLE, prefer_onednn


def test_onednn_is_asked_for_when_the_user_did_not_choose():
    environ = {}
    prefer_onednn(environ)
    assert environ == {ONEDNN_VARIABLE: "1"}


def test_the_user_s_choice_is_kept():
    environ = {ONEDNN_VARIABLE: "0"}
    prefer_onednn(environ)
    assert environ == {ONEDNN_VARIABLE: "0"}
