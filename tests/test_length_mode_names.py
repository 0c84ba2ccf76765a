"""`bounce`, ComfyUI's own name for the ping-pong length mode, is accepted wherever a length mode is: the library,
the command line (and the nodes' validation, in test_nodes_inprocess.py); results and reports use our name."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from latentsync.__main__ import build_parser
from latentsync.timeline import LENGTH_MODE_ALIASES, LENGTH_MODES, SourceTiming, check_length_mode, plan_output


def test_bounce_is_pingpong_in_the_library():
    assert LENGTH_MODE_ALIASES == {"bounce": "pingpong"}
    assert check_length_mode("bounce") == "pingpong"
    assert [check_length_mode(m) for m in LENGTH_MODES] == list(LENGTH_MODES)
    timing = SourceTiming.constant_rate(4, Fraction(25))
    bounce, pingpong = plan_output(timing, Fraction(1), "bounce"), plan_output(timing, Fraction(1), "pingpong")
    assert bounce.mode == "pingpong"  # reports say our name
    assert np.array_equal(bounce.source, pingpong.source) and np.array_equal(bounce.starts, pingpong.starts)
    with pytest.raises(ValueError, match="unknown length mode 'boomerang'.*bounce \\(= pingpong\\)"):
        check_length_mode("boomerang")


def test_bounce_on_the_command_line():
    args = build_parser().parse_args(["--video", "v.mp4", "--out", "o.mp4", "--length-mode", "bounce"])
    assert args.length_mode == "bounce" and check_length_mode(args.length_mode) == "pingpong"
