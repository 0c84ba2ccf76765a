"""The one set of lip-sync options: the command line, the job tables and the nodes validate them the same way."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from latentsync.options import LipSyncOptions, ModelOptions, OptionError


def test_defaults_are_the_official_settings():
    o = LipSyncOptions().validate()
    assert (o.steps, o.guidance, o.seed, o.deepcache, o.deepcache_interval) == (20, 1.5, 1247, True, 3)
    assert (o.length_mode, o.max_gap, o.strict_faces, o.face_selection) == ("pingpong", 5, False, "largest")
    assert ModelOptions().validate().version == "1.5"


def test_strings_from_a_job_table_are_parsed_and_unknown_names_refused():
    o = LipSyncOptions.from_mapping({"steps": "3", "length_mode": "loop", "strict-faces": "yes", "seed": "",
                                     "guidance": "1.0"})
    assert (o.steps, o.length_mode, o.strict_faces, o.seed, o.guidance) == (3, "loop", True, 1247, 1.0)
    with pytest.raises(OptionError, match="unknown option 'stepz'.*known options: .*steps"):
        LipSyncOptions.from_mapping({"stepz": 3})
    with pytest.raises(OptionError, match="steps must be a whole number, got '2.5'"):
        LipSyncOptions.from_mapping({"steps": "2.5"})
    with pytest.raises(OptionError, match="strict_faces must be true or false"):
        LipSyncOptions.from_mapping({"strict_faces": "maybe"})


@pytest.mark.parametrize("changes, message", [
    ({"steps": 0}, "steps must be at least 1, got 0"),
    ({"length_mode": "sideways"}, "unknown length mode 'sideways'; choose one of pingpong, loop"),
    ({"max_gap": -1}, "max gap must be at least 0, got -1"),
    ({"face_selection": "tallest"}, "unknown face selection 'tallest'"),
])
def test_the_same_error_text_from_every_route(changes, message):
    with pytest.raises(OptionError, match=message):
        LipSyncOptions(**changes).validate()
    with pytest.raises(OptionError, match=message):
        LipSyncOptions.from_mapping({k: str(v) for k, v in changes.items()})


def test_the_command_line_is_built_from_the_fields():
    parser = argparse.ArgumentParser()
    LipSyncOptions.add_arguments(parser)
    ModelOptions.add_arguments(parser)
    args = parser.parse_args(["--steps", "4", "--no-deepcache", "--strict-faces", "--length-mode", "freeze",
                              "--no-download", "--models", "m", "--version", "1.6"])
    o, m = LipSyncOptions.from_args(args), ModelOptions.from_args(args)
    assert (o.steps, o.deepcache, o.strict_faces, o.length_mode) == (4, False, True, "freeze")
    assert (m.download, m.models, m.version) == (False, Path("m"), "1.6")
    assert o.pipeline_kwargs()["deepcache"] is False
    with pytest.raises(SystemExit):
        parser.parse_args(["--length-mode", "sideways"])
