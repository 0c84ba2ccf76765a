"""PyAV video/audio I/O: real clip round trip, exact fractional fps, AAC mux, odd sizes, atomic and safe writes."""
from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from conftest import shared_path

from latentsync.video_io import iter_video_frames, read_audio, read_video, video_fps, write_video

CLIP = ("media", "clip_speaking_woman_frontal_350px_15fps.mp4")


def gradient_frames(n: int, h: int, w: int) -> torch.Tensor:
    """Smooth, moving test pattern (compresses well, so decoded values stay close to the input)."""
    y = torch.linspace(0, 1, h)[:, None]
    x = torch.linspace(0, 1, w)[None, :]
    frames = []
    for i in range(n):
        r = 0.5 + 0.4 * torch.sin(2 * torch.pi * (x + i / n))
        g = 0.2 + 0.6 * y.expand(h, w)
        b = 0.3 + 0.2 * (x + y).expand(h, w)
        frames.append(torch.stack([r.expand(h, w), g, b], -1))
    return (torch.stack(frames) * 255).round().to(torch.uint8)


def tone(seconds: float, rate: int, channels: int = 1) -> torch.Tensor:
    t = torch.arange(int(seconds * rate)) / rate
    return (0.3 * torch.sin(2 * torch.pi * 440 * t)).repeat(channels, 1).float()


def test_real_clip_round_trip(tmp_path):
    clip = read_video(shared_path(*CLIP))
    assert clip.frames.shape == (45, 350, 350, 3) and clip.frames.dtype == torch.uint8
    assert clip.fps == Fraction(15) and isinstance(clip.fps, Fraction)
    assert clip.audio is None and clip.sample_rate is None
    out = write_video(tmp_path / "out.mp4", clip.frames, clip.fps)
    back = read_video(out)
    assert back.frames.shape == clip.frames.shape
    assert back.fps == Fraction(15)
    err = (back.frames.float() - clip.frames.float()).abs().mean().item()
    assert err < 3.0, err  # CRF 18 re-encode of a real face clip
    with av.open(str(out)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"


def test_saturated_colours_round_trip_and_bt709_tag(tmp_path):
    colours = torch.tensor([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [40, 40, 40], [230, 230, 230]])
    frames = colours[:, None, None, :].expand(6, 32, 32, 3).to(torch.uint8).contiguous()
    out = write_video(tmp_path / "c.mp4", frames, 6)
    back = read_video(out).frames
    err = (back[:, 8:24, 8:24].float() - frames[:, 8:24, 8:24].float()).abs().amax().item()
    assert err <= 6, err
    with av.open(str(out)) as c:
        frame = next(c.decode(video=0))
        assert frame.colorspace == 1 and frame.color_range == 1  # BT.709, limited ("MPEG") range


def test_windowed_reader_matches_full_read():
    path = shared_path(*CLIP)
    windows = list(iter_video_frames(path, window=16))
    assert [w.shape[0] for w in windows] == [16, 16, 13]
    assert torch.equal(torch.cat(windows), read_video(path).frames)
    assert video_fps(path) == 15


def test_fractional_fps_preserved_and_streamed_windows(tmp_path):
    frames = gradient_frames(20, 64, 96)
    fps = Fraction(30000, 1001)
    out = write_video(tmp_path / "ntsc.mp4", (frames[i : i + 8] for i in range(0, 20, 8)), fps)
    back = read_video(out)
    assert back.fps == fps
    assert back.frames.shape == (20, 64, 96, 3)
    assert (back.frames.float() - frames.float()).abs().mean() < 2.0
    # a float fps is turned into the nearest fraction with denominator <= 1001
    out2 = write_video(tmp_path / "float.mp4", frames, 29.97002997)
    assert read_video(out2).fps == fps


@pytest.mark.parametrize("rate,channels", [(16000, 1), (22050, 1), (44100, 2)])
def test_audio_muxed_with_matching_duration_and_alignment(tmp_path, rate, channels):
    fps = Fraction(25)
    frames = gradient_frames(50, 32, 32)  # 2.0 s
    wave = torch.zeros(channels, 2 * rate)
    start = int(0.5 * rate)
    wave[:, start : start + rate // 10] = tone(0.1, rate, channels)  # a 100 ms beep at 0.5 s
    out = write_video(tmp_path / "av.mp4", frames, fps, audio=wave, sample_rate=rate)
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
    clip = read_video(out)
    assert clip.sample_rate == rate and clip.audio.shape[0] == channels
    assert abs(clip.audio.shape[1] / rate - 2.0) < 1 / 25  # within one video frame
    onset = int((clip.audio[0].abs() > 0.1).nonzero()[0])
    assert abs(onset - start) < rate // 100  # within 10 ms: encoder delay is compensated
    audio_only, r = read_audio(out)
    assert r == rate and torch.equal(audio_only, clip.audio)


def test_read_audio_wav_and_mono_vector(tmp_path):
    wave, rate = read_audio(shared_path("media", "speech_espeak_ng_generated_22k.wav"))
    assert rate == 22050 and wave.ndim == 2 and wave.shape[0] == 1 and wave.dtype == torch.float32
    assert 7.0 < wave.shape[1] / rate < 8.0 and 0.05 < wave.abs().max() <= 1.0
    out = write_video(tmp_path / "v.mp4", gradient_frames(10, 16, 16), 10, audio=wave[0, : rate], sample_rate=rate)
    assert read_audio(out)[0].shape == (1, rate)


@pytest.mark.parametrize("codec,name", [("libmp3lame", "speech.mp3"), ("aac", "speech.m4a")])
def test_read_audio_compressed_formats(tmp_path, codec, name):
    """Files written by PyAV itself (mp3, m4a), read back at their own rate and length (+- one codec frame)."""
    rate = 22050
    wave = tone(1.5, rate).numpy()
    with av.open(str(tmp_path / name), "w") as c:
        s = c.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = 0
        for packet in s.encode(frame):
            c.mux(packet)
        for packet in s.encode(None):
            c.mux(packet)
    back, r = read_audio(tmp_path / name)
    assert r == rate and back.shape[0] == 1
    assert abs(back.shape[1] - wave.shape[1]) <= 1152 + 1024
    rms = back.pow(2).mean().sqrt().item()
    assert abs(rms - 0.3 / 2**0.5) < 0.03


def test_odd_sizes_are_padded_never_cropped(tmp_path):
    frames = gradient_frames(6, 33, 47)
    frames[:, -1, :, :] = 255  # a white last row and column must survive
    frames[:, :, -1, :] = 255
    back = read_video(write_video(tmp_path / "odd.mp4", frames, 12)).frames
    assert back.shape == (6, 34, 48, 3)
    assert (back[:, :33, :47].float() - frames.float()).abs().mean() < 3.0
    assert back[:, 33, :47].float().mean() > 230  # padding repeats the last row
    assert back[:, :33, 47].float().mean() > 230


def test_failed_write_leaves_no_file(tmp_path):
    def windows():
        yield gradient_frames(4, 32, 32)
        yield gradient_frames(4, 64, 64)  # size change mid-stream: the encode fails

    with pytest.raises(ValueError, match="same size"):
        write_video(tmp_path / "bad.mp4", windows(), 10)
    assert list(tmp_path.iterdir()) == []

    def interrupted():
        yield gradient_frames(4, 32, 32)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_video(tmp_path / "bad.mp4", interrupted(), 10)
    assert list(tmp_path.iterdir()) == []


def test_output_path_rules(tmp_path):
    frames = gradient_frames(2, 16, 16)
    src = tmp_path / "input.mp4"
    write_video(src, frames, 10)
    before = src.read_bytes()
    with pytest.raises(ValueError, match="refusing to overwrite the input"):
        write_video(src, frames, 10, overwrite=True, inputs=[src])
    link = tmp_path / "alias.mp4"
    os.symlink(src, link)
    with pytest.raises(ValueError, match="refusing to overwrite the input"):
        write_video(link, frames, 10, overwrite=True, inputs=[src])
    with pytest.raises(FileExistsError, match="already exists"):
        write_video(src, frames, 10)
    assert src.read_bytes() == before
    with pytest.raises(FileNotFoundError, match="output folder does not exist"):
        write_video(tmp_path / "missing" / "o.mp4", frames, 10)
    write_video(src, gradient_frames(3, 16, 16), 10, overwrite=True)
    assert read_video(src).frames.shape[0] == 3


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_video(tmp_path / "nope.mp4")
    with pytest.raises(ValueError, match="not a file"):
        read_audio(tmp_path)
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(ValueError, match="cannot open"):
        read_video(tmp_path / "junk.mp4")
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "o.mp4", torch.zeros(2, 16, 16, 3), 10)
    with pytest.raises(ValueError, match="sample_rate"):
        write_video(tmp_path / "o.mp4", gradient_frames(2, 16, 16), 10, audio=torch.zeros(100))
    with pytest.raises(ValueError, match="no audio stream"):
        read_audio(shared_path(*CLIP))
    assert not (tmp_path / "o.mp4").exists()
    assert np.array_equal(sorted(p.name for p in tmp_path.iterdir()), ["junk.mp4"])


def test_the_same_frames_always_encode_to_the_same_file(tmp_path):
    """Reproducible encodes: x264's macroblock-tree rate control gave different bytes for the same real frames
    from run to run on AVX-512 CPUs (decoded frames up to 30 levels apart); the writer turns it off. Written in one
    go and window by window with pauses, the file is byte for byte the same."""
    import time

    from latentsync.video_io import VideoWriter

    frames = read_video(shared_path(*CLIP)).frames[:30]
    write_video(tmp_path / "a.mp4", frames, 15)
    write_video(tmp_path / "b.mp4", frames, 15)
    with VideoWriter(tmp_path / "c.mp4", 15, tuple(frames.shape[1:3])) as writer:
        for start in range(0, 30, 16):
            writer.write(frames[start:start + 16])
            time.sleep(0.2)
        writer.close()
    data = [(tmp_path / f"{k}.mp4").read_bytes() for k in "abc"]
    assert data[0] == data[1] == data[2]
