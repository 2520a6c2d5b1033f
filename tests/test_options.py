"""Each option is declared once (`config.RunConfig`): the parser, the recorded settings, the resume check and
the refusal of a flag without its action all follow that declaration."""

import dataclasses

import pytest

from segmentation.checks import check_actions
from segmentation.config import ACTIONS, BOOK, MATCH, RunConfig, TrainingSettings, flag, options, setting_differences
from segmentation.errors import UsageError
from segmentation.parser import build_parser


def another_value(declaration: dataclasses.Field) -> object:
    """A value of the option other than its default, of its type."""
    choices = declaration.metadata["argparse"].get("choices")
    if choices:
        value = next(choice for choice in choices if choice != declaration.default and choice != "off")
        return (value,) if isinstance(declaration.default, tuple) else value
    if isinstance(declaration.default, bool):
        return not declaration.default
    if declaration.metadata["argparse"].get("type") is int:
        return 7
    if declaration.metadata["argparse"].get("type") is float:
        return 0.5
    return "somewhere"


def test_the_parser_has_every_declared_option_with_its_default_and_nothing_else():
    parser = build_parser()
    parsed = RunConfig.from_namespace(parser.parse_args([]))
    assert parsed == BOOK
    destinations = {action.dest for action in parser._actions} - {"help"}
    assert destinations == set(options())
    help_text = parser.format_help()
    for name in options():
        assert flag(name) in help_text


@pytest.mark.parametrize("name", [name for name, declaration in options().items() if declaration.metadata["used_with"]])
def test_an_option_given_without_the_actions_it_is_used_with_is_refused_in_one_line(name):
    declaration = options()[name]
    used_with = declaration.metadata["used_with"]
    other_action = next(action for action in ACTIONS if action not in used_with)
    config = RunConfig(**{name: another_value(declaration), other_action: True})
    with pytest.raises(UsageError, match=f"^{flag(name)}.* is used with {flag(used_with[0])}"):
        check_actions(config)
    for action in used_with:
        try:
            check_actions(RunConfig(**{name: another_value(declaration), action: True, "restore_weights": "w"}))
        except UsageError as error:
            assert "is used with" not in str(error) or not str(error).startswith(flag(name))


def test_the_help_of_an_option_used_with_some_actions_names_them():
    help_text = " ".join(build_parser().format_help().split())
    assert "--patience N with --train: stop when" in help_text
    assert "--tta with --evaluate, --train or --predict-dir: average" in help_text


@pytest.mark.parametrize("name", [name for name, declaration in options().items()
                                  if declaration.metadata["resume"] == MATCH])
def test_each_setting_a_resume_must_match_is_recorded_and_checked(name):
    saved = TrainingSettings(BOOK, n_classes=4, precision="float32")
    changed = dataclasses.replace(BOOK, **{name: another_value(options()[name])})
    current = TrainingSettings(changed, n_classes=4, precision="float32")
    if name == "precision":
        current = dataclasses.replace(current, precision="mixed_bfloat16")
    assert name in saved.as_record()
    assert [difference.split()[0] for difference in setting_differences(saved.as_record(), current)] == [name]


def test_settings_a_resume_may_change_are_recorded_but_not_checked():
    saved = TrainingSettings(BOOK, n_classes=4, precision="float32")
    current = TrainingSettings(dataclasses.replace(BOOK, patience=3, seed=5, tta=True), n_classes=4,
                               precision="float32", class_names=("background", "a", "b", "c"))
    assert current.as_record()["patience"] == 3
    assert setting_differences(saved.as_record(), current) == []
    assert "epochs" not in saved.as_record() and "verbose" not in saved.as_record()
