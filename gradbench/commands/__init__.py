"""The command modules of ``python -m gradbench``, in the order ``--help`` lists them."""

from gradbench.commands import (
    all_command,
    device_check_command,
    list_command,
    report_command,
    timing_command,
    toy_command,
    train_command,
    variance_command,
)

COMMANDS = [list_command, toy_command, train_command, timing_command, variance_command, all_command,
            report_command, device_check_command]
