"""README is the user's manual: every option of every command is in it."""
import argparse

from conftest import ROOT
from mcu_emul.commands.cli import parser


def test_every_option_is_documented():
    text = (ROOT / "README.md").read_text()
    subs = parser()._subparsers._group_actions[0].choices
    missing = []
    for name, sp in subs.items():
        for a in sp._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) or a.help == argparse.SUPPRESS:
                continue
            for flag in a.option_strings:
                if f"`{flag}" not in text:
                    missing.append(f"{name} {flag}")
    assert not missing, missing
