"""The command line's wiring: every command dispatches through set_defaults, every option has help,
method choices come from the registry, user errors exit 2 and bugs keep their traceback."""

from __future__ import annotations

import argparse

import pytest

from overinterp import cli
from overinterp.cli import _common, build_parser, main
from overinterp.sis.methods import method_names


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, (*path, name))


def test_every_option_and_command_has_help():
    missing = []
    for path, parser in _walk(build_parser()):
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                helped = {a.dest for a in action._choices_actions if a.help}
                missing += [f"{' '.join(path)} {name} (command)" for name in action.choices if name not in helped]
                continue
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{' '.join(path) or 'overinterp'} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, f"options without help: {missing}"


def test_every_leaf_command_has_a_handler():
    for path, parser in _walk(build_parser()):
        has_sub = any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
        if path and not has_sub:
            assert callable(parser.get_default("func")), f"{' '.join(path)} has no set_defaults(func=…)"


def test_method_choices_come_from_the_registry(monkeypatch):
    from overinterp.sis import methods

    choices = next(
        a for a in build_parser()._subparsers._group_actions[0].choices["backselect"]._actions if a.dest == "method"
    ).choices
    assert list(choices) == method_names()
    monkeypatch.setattr(methods, "method_names", lambda: [*list(methods._BY_NAME), "exact2"])
    monkeypatch.setitem(methods._BY_NAME, "exact2", methods.Exact)
    choices = next(
        a for a in build_parser()._subparsers._group_actions[0].choices["backselect"]._actions if a.dest == "method"
    ).choices
    assert "exact2" in choices


def _method(argv: list[str], num_features: int | None = None):
    p = argparse.ArgumentParser()
    _common.add_method_options(p)
    return _common.method_from_args(p.parse_args(argv), num_features)


def test_methods_from_options():
    assert _method([]).describe()["name"] == "exact"
    assert _method(["--method", "kstep"]).k == 16 and _method(["--method", "gradient"]).k == 1
    assert _method(["--method", "adaptive", "--tail", "0.3"]).tail == 0.3
    with pytest.raises(ValueError, match="--k applies to --method gradient or kstep only"):
        _method(["--k", "4"])
    with pytest.raises(ValueError, match="--rank-by applies to --method exact only"):
        _method(["--method", "kstep", "--rank-by", "probability"])
    with pytest.raises(ValueError, match="--tail applies to --method adaptive only"):
        _method(["--tail", "0.1"])
    with pytest.raises(ValueError, match="exceeds"):
        _method(["--method", "kstep", "--k", "65"], num_features=64)


def test_old_factories_are_gone():
    from overinterp.cli import imagenet

    assert not hasattr(cli, "make_method") and not hasattr(imagenet, "_method")


def test_bugs_are_not_user_errors(monkeypatch, capsys):
    from overinterp.cli import core

    def bug(args):
        raise TypeError("a bug")

    parser = build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["models"].set_defaults(func=bug)
    with pytest.raises(TypeError, match="a bug"):
        main(["models"])
    parser._subparsers._group_actions[0].choices["models"].set_defaults(func=core._cmd_models)

    def user(args):
        raise FileNotFoundError("no such file: x")

    parser._subparsers._group_actions[0].choices["models"].set_defaults(func=user)
    assert main(["models"]) == 2
    assert "overinterp models: error: no such file: x" in capsys.readouterr().err
