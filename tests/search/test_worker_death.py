"""Reasons for dead workers, from log text as Ray 2.60 and CPython 3.11 write it."""

import time

from search.worker_death import death_reason, describe_crash

GLIBC_ABORT = """\
:job_id:01000000
:actor_name:CandidateTrainable
some earlier warning from a library
corrupted double-linked list
*** SIGABRT received at time=1795777347 on cpu 1 ***
PC: @     0x7f5f0b6a8eec  (unknown)  (unknown)
    @     0x7f5f0b65a050   66701072  (unknown)
[2026-11-27 11:02:27,955 E 4398 4398] logging.cc:474: *** SIGABRT received at time=1795777347 on cpu 1 ***
Fatal Python error: Aborted

Stack (most recent call first):
  File "/venv/lib/python3.11/site-packages/torch/autograd/graph.py", line 1072 in _engine_run_backward
  File "/repo/pruning/train.py", line 68 in _run_steps
"""  # noqa: E501

SEGFAULT = """\
:actor_name:CandidateTrainable
*** SIGSEGV received at time=1795777347 on cpu 0 ***
PC: @     0x7f5f0b6a8eec  (unknown)  (unknown)
[2026-11-27 11:02:27,955 E 4398 4398] logging.cc:474: PC: @     0x7f5f0b6a8eec  (unknown)
Fatal Python error: Segmentation fault

Current thread 0x00007fe520056b80 (most recent call first):
  File "/venv/lib/python3.11/site-packages/torch/nn/modules/conv.py", line 543 in _conv_forward
  File "/venv/lib/python3.11/site-packages/torch/nn/modules/conv.py", line 548 in forward
"""

ACTOR_DIED = """\
Failure # 1 (occurred at 2026-11-27_11-02-27)
ray::T.train() (pid=4398, ip=127.0.0.1)
ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.
\tclass_name: CandidateTrainable
\tactor_id: de0ef313a4dc4ea9536b6d1d01000000
\tpid: 999999999
\tnamespace: 20beb020-4632-46ff-9e31-4b3ea3fad8e3
\tip: 127.0.0.1
The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR \
Worker exit detail: Worker unexpectedly exits with a connection error code 2. End of file.
"""


def test_glibc_abort_gives_the_signal_and_glibc_message():
    assert describe_crash(GLIBC_ABORT) == "SIGABRT: corrupted double-linked list"


def test_segfault_gives_the_signal_and_innermost_python_frame():
    assert describe_crash(SEGFAULT) == "SIGSEGV in conv.py:543 _conv_forward"


def test_faulthandler_alone_is_enough():
    log = 'Fatal Python error: Bus error\n\nStack:\n  File "/x/y.py", line 3 in f\n'
    assert describe_crash(log) == "SIGBUS in y.py:3 f"


def test_a_log_without_a_fatal_signal_describes_nothing():
    assert describe_crash(":actor_name:CandidateTrainable\nUserWarning: something\n") is None
    assert describe_crash("") is None


def test_a_worker_with_no_log_falls_back_to_rays_exit_detail():
    start = time.perf_counter()
    reason = death_reason(ACTOR_DIED)  # no Ray here and no such pid: no log to read
    assert reason == ("worker died: Worker unexpectedly exits with a connection error code "
                      "2. (no fatal signal in its log: killed by SIGKILL or the OOM killer?)")
    assert time.perf_counter() - start < 15


def test_a_python_exception_gives_its_last_line_from_the_last_failure():
    text = ("Failure # 1 (occurred at x)\nTraceback (most recent call last):\n"
            "ValueError: first attempt\n"
            "Failure # 2 (occurred at y)\nTraceback (most recent call last):\n"
            '  File "a.py", line 1, in f\nRuntimeError: second attempt\n')
    assert death_reason(text) == "RuntimeError: second attempt"
