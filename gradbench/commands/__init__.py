"""The command modules of ``python -m gradbench``, in the order ``--help`` lists them."""

from gradbench.commands import list_command, toy_command

COMMANDS = [list_command, toy_command]
