"""Everything about rclone: command lines, exit codes, the RC client and running a stage.

`execute.py` is the only module in cloudplow that starts a process.
"""
