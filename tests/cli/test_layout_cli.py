"""The CLI's layout: one command per module under harness/cli/commands, and main.py only the
parser built from their table and the dispatch (issue #20: a new command is a change in one place)."""

from __future__ import annotations

import ast
from pathlib import Path

COMMANDS_DIR = Path(__file__).resolve().parents[2] / "harness" / "cli" / "commands"
MAIN = COMMANDS_DIR.parent / "main.py"
ARGUMENTS = COMMANDS_DIR.parent / "arguments.py"
# certify's --device (no default, metavar DEV: where to re-run a reference) is not the
# --device cpu of validate and exec, which arguments.add_device spells
OWN_SPELLING = {("certify", "--device")}
PARSER_CALLS = {"add_parser", "add_argument", "add_subparsers", "add_argument_group", "add_mutually_exclusive_group"}


def _calls(tree: ast.AST, names: set[str]) -> list[str]:
    return [
        n.func.attr
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in names
    ]


def command_problems(source: str, module: str) -> list[str]:
    """What keeps a command module from defining exactly one command (empty: it does)."""
    tree = ast.parse(source)
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    names = [
        n.value.value
        for n in tree.body
        if isinstance(n, ast.Assign)
        and isinstance(n.value, ast.Constant)
        and any(isinstance(t, ast.Name) and t.id == "NAME" for t in n.targets)
    ]
    problems = [f"{module}: no {f}()" for f in ("setup_arguments", "run") if f not in functions]
    if len(names) != 1 or not isinstance(names[0], str):
        problems.append(f"{module}: needs one NAME = '<command>'")
    elif names[0].replace("-", "_") != module.rstrip("_"):
        problems.append(f"{module}: NAME {names[0]!r} is not the module's name")
    parsers = _calls(tree, {"add_parser"})
    if len(parsers) != 1:
        problems.append(f"{module}: {len(parsers)} add_parser calls, one command per module")
    if _calls(tree, {"add_subparsers"}):
        problems.append(f"{module}: nested subcommands")
    return problems


def main_problems(source: str) -> list[str]:
    """Command bodies in main.py: a command function, or arguments added there instead of in a command."""
    tree = ast.parse(source)
    problems = [
        f"main.py defines {n.name}()"
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef)
        and (n.name.startswith("cmd_") or n.name in ("run", "setup_arguments", "register"))
    ]
    problems += [f"main.py calls {call}" for call in _calls(tree, PARSER_CALLS - {"add_subparsers"})]
    return problems


def flags_added(source: str) -> set[str]:
    """The option strings a module's ``add_argument`` calls spell out."""
    return {
        a.value
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "add_argument"
        for a in n.args
        if isinstance(a, ast.Constant) and str(a.value).startswith("-")
    }


def test_each_command_module_defines_one_command():
    modules = sorted(p for p in COMMANDS_DIR.glob("*.py") if p.name != "__init__.py")
    assert len(modules) >= 17
    problems = [line for p in modules for line in command_problems(p.read_text(), p.stem)]
    assert problems == []


def test_main_has_no_command_bodies():
    assert main_problems(MAIN.read_text()) == []


def test_the_parser_is_the_table_and_every_command_module_is_in_it():
    import harness.cli.commands as package
    from harness.cli.main import COMMANDS, build_parser

    on_disk = {p.stem for p in COMMANDS_DIR.glob("*.py") if p.name != "__init__.py"}
    assert sorted(m.__name__.rsplit(".", 1)[1] for m in COMMANDS) == sorted(on_disk)
    assert all(m.__name__.startswith(package.__name__ + ".") for m in COMMANDS)
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert list(sub.choices) == [m.NAME for m in COMMANDS]  # the order --help lists them
    for module in COMMANDS:
        assert sub.choices[module.NAME].get_default("func") is module.run, module.NAME


def test_a_shared_flag_is_spelt_only_in_arguments():
    shared = flags_added(ARGUMENTS.read_text())
    assert {"--junit", "--formats", "--max-cells", "--check", "--trusted-keys"} <= shared
    respelt = sorted(
        (p.stem, flag)
        for p in COMMANDS_DIR.glob("*.py")
        for flag in flags_added(p.read_text()) & shared
        if (p.stem, flag) not in OWN_SPELLING
    )
    assert respelt == [], "use the adder in harness/cli/arguments.py"


def test_only_run_and_certify_end_on_sigterm_like_ctrl_c():
    from harness.cli.main import COMMANDS

    assert [m.NAME for m in COMMANDS if getattr(m, "INTERRUPTIBLE", False)] == ["run", "certify"]


def test_the_layout_checks_catch_what_they_look_for():
    """Planted: a module adding two commands, one without run(), one misnamed, and main.py with a body."""
    two = (
        "NAME = 'a'\ndef setup_arguments(sub):\n    sub.add_parser('a')\n    sub.add_parser('b')\n"
        "def run(args):\n    return 0\n"
    )
    assert command_problems(two, "a") == ["a: 2 add_parser calls, one command per module"]
    no_run = "NAME = 'a'\ndef setup_arguments(sub):\n    return sub.add_parser(NAME)\n"
    assert command_problems(no_run, "a") == ["a: no run()"]
    assert command_problems(no_run.replace("'a'", "'b'") + "def run(args):\n    return 0\n", "a") == [
        "a: NAME 'b' is not the module's name"
    ]
    ok = no_run.replace("'a'", "'replay-study'") + "def run(args):\n    return 0\n"
    assert (
        command_problems(ok, "replay_study") == []
        and command_problems(ok.replace("replay-study", "exec"), "exec_") == []
    )
    body = "def cmd_tiny(args):\n    return 0\ndef build_parser(p):\n    p.add_argument('--x')\n"
    assert main_problems(body) == ["main.py defines cmd_tiny()", "main.py calls add_argument"]
    assert flags_added("s.add_argument('run')\ns.add_argument('--junit', metavar='FILE')\n") == {"--junit"}
