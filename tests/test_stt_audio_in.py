"""Block-wise WAV reading for long files: equal to reading the whole file, errors named."""

from __future__ import annotations

import numpy as np
import pytest

from moshi_mlx.audio.wav import AudioFileError, read_wav, write_wav
from moshi_mlx.stt.audio_in import iter_wav, wav_info


@pytest.mark.parametrize("rate, channels", [(44100, 2), (16000, 1), (24000, 2), (48000, 1)])
def test_blocks_concatenate_to_the_whole_file(tmp_path, rate, channels):
    rng = np.random.default_rng(rate)
    x = rng.uniform(-0.5, 0.5, (channels, int(rate * 1.37))).astype(np.float32)
    path = tmp_path / "a.wav"
    write_wav(path, x, rate)
    blocks = list(iter_wav(path, 24000, block_seconds=0.25))
    assert len(blocks) == 6 and max(len(b) for b in blocks) <= 0.25 * 24000 + 1
    np.testing.assert_allclose(np.concatenate(blocks), read_wav(path, 24000), atol=1e-6)
    info = wav_info(path)
    assert (info.sample_rate, info.channels, info.frames) == (rate, channels, x.shape[1])


def test_bad_files_are_named(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(AudioFileError, match="bad.wav: no fmt chunk"):
        wav_info(bad)
    good = tmp_path / "good.wav"
    write_wav(good, np.zeros(4800, np.float32), 24000)
    data = good.read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[:-100])
    with pytest.raises(AudioFileError, match="cut.wav: truncated"):
        wav_info(tmp_path / "cut.wav")
    (tmp_path / "text.wav").write_text("hello")
    with pytest.raises(AudioFileError, match="text.wav: not a WAV file"):
        next(iter_wav(tmp_path / "text.wav", 24000))
    with pytest.raises(AudioFileError, match="missing.wav: cannot read"):
        wav_info(tmp_path / "missing.wav")
