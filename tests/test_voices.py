"""Who speaks when: the learned voice print (GE2E) and its fallback, on the sample's two voices."""

from __future__ import annotations

import os
import subprocess
import sys

import librosa
import numpy as np
import pytest

from minitalk import io
from minitalk.prepare import audio as au
from minitalk.prepare import diarize, voices

FPS = 25
SECONDS = 40  # four turns of the sample


@pytest.fixture(scope="module")
def conversation(sample_dir, gt):
    wav = io.read_audio(sample_dir / "dialogue.mp4")[: SECONDS * io.SAMPLE_RATE]
    return wav, gt["speaking"][:, : SECONDS * FPS], gt["mouth"][:, : SECONDS * FPS]


def test_the_voice_encoder_is_installed():
    """`make install` puts the encoder's weights in place: without them who-speaks silently falls
    back to pitch and MFCC, so an install route that broke must fail here."""
    assert voices.available(), voices.MISSING
    assert diarize.choose_voice_print("auto") == "ge2e"


def test_embeddings_are_unit_vectors_that_tell_the_two_voices_apart(conversation):
    wav, speaking, _ = conversation
    pieces, bounds = diarize.voiced_pieces(wav, "ge2e")
    owner = np.array([speaking[:, int(a * FPS) : int(np.ceil(b * FPS))].mean(1).argmax() for a, b in pieces])
    e = voices.embed_pieces(wav, pieces, bounds=bounds)
    assert e.shape == (len(pieces), 256)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    same = [float(e[i] @ e[j]) for i in range(len(e)) for j in range(i) if owner[i] == owner[j]]
    other = [float(e[i] @ e[j]) for i in range(len(e)) for j in range(i) if owner[i] != owner[j]]
    assert np.mean(same) > np.mean(other) + 0.1
    labels = diarize.k_means(e, 2)
    assert max(np.mean(labels == owner), np.mean(labels != owner)) > 0.95
    assert diarize.distinct_voices(e, labels, "ge2e")


def test_one_voice_does_not_split_into_two(conversation):
    wav, speaking, _ = conversation
    first_turn = np.flatnonzero(speaking[1])[0]  # person 0 speaks first, alone
    alone = wav[: first_turn * io.SAMPLE_RATE // FPS]
    pieces, bounds = diarize.voiced_pieces(alone, "ge2e")
    e = voices.embed_pieces(alone, pieces, bounds=bounds)
    assert len(pieces) > 10 and not diarize.distinct_voices(e, diarize.k_means(e, 2), "ge2e")


@pytest.mark.parametrize("voice_print", ["ge2e", "pitch+mfcc"])
def test_diarize_finds_who_speaks_with_either_voice_print(conversation, voice_print):
    wav, speaking, mouth = conversation
    who = diarize.diarize(wav, au.log_mel(wav), speaking.shape[1], FPS, mouth=mouth, voice_print=voice_print)
    assert who.voice_print == voice_print and who.method == "voice+mouth"
    assert (who.speaking == speaking).all(axis=0).mean() > 0.95


def test_without_the_weights_auto_falls_back_and_ge2e_is_refused(monkeypatch):
    monkeypatch.setattr(voices, "weights_path", lambda: None)
    assert diarize.choose_voice_print("auto") == "pitch+mfcc"
    with pytest.raises(FileNotFoundError, match="resemblyzer"):
        diarize.choose_voice_print("ge2e")
    with pytest.raises(ValueError, match="voice_print"):
        diarize.choose_voice_print("ivector")


def test_a_turn_is_held_through_short_pauses_and_the_clip_edges():
    pieces = [(0.3, 1.0), (1.5, 2.0), (3.5, 4.0), (4.2, 4.6)]
    speaking = diarize.speaking_from_pieces(pieces, np.array([0, 0, 1, 1]), 125, FPS, max_pause_s=1.0)
    t = (np.arange(125) + 0.5) / FPS
    np.testing.assert_array_equal(speaking[0], t < 2.0)  # from the clip's start, through a 0.5 s pause
    np.testing.assert_array_equal(speaking[1], t >= 3.5)  # to the clip's end (0.4 s after the last word)
    assert not speaking[:, (t > 2.0) & (t < 3.5)].any()  # the silence between two people's turns: nobody


def test_one_call_leaves_librosa_s_yin_kernel_compiled_on_disk(tmp_path):
    """What `make install` runs, so that no two processes ever compile it at the same moment; in a
    fresh process (this one has the kernels in memory already) with a cache folder of its own."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    code = "from minitalk.prepare import diarize; diarize.compile_librosa()"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=600)
    index = [p.name for p in tmp_path.rglob("*.nbi")]
    assert any("_pi_wrapper" in name for name in index), index  # YIN's parabolic interpolation


def test_three_voices_among_three_people(conversation):
    """The sample's 40 s, then the same 40 s with the first voice pitched down 4 semitones (another
    voice to the embedding: a third person); the first person's mouth moves in the first half only,
    the third's in the second, the second's throughout."""
    wav, speaking, mouth = conversation
    step = io.SAMPLE_RATE // FPS
    lower = librosa.effects.pitch_shift(wav, sr=io.SAMPLE_RATE, n_steps=-4)
    first = np.repeat(speaking[0], step)[: len(wav)]
    audio = np.concatenate([wav, np.where(first, lower, wav)]).astype(np.float32)
    n = speaking.shape[1]
    truth = np.zeros((3, 2 * n), bool)
    truth[0, :n], truth[1], truth[2, n:] = speaking[0], np.tile(speaking[1], 2), speaking[0]
    out_of_time = np.roll(mouth[1], 333)
    mouths = np.stack([np.concatenate([mouth[0], out_of_time]), np.tile(mouth[1], 2),
                       np.concatenate([np.roll(mouth[0], 500), mouth[0]])])  # fmt: skip
    who = diarize.diarize(audio, au.log_mel(audio), 2 * n, FPS, mouth=mouths, voice_print="ge2e")
    assert who.method == "voice+mouth" and who.voice_cluster.max() == 2  # three voices
    assert (who.speaking == truth).all(axis=0).mean() > 0.97


def test_k_means_counts_the_clusters_it_is_given():
    rng = np.random.default_rng(0)
    centres = np.zeros((3, 13))  # three voices' 13 features (`voice_features`), 10 spreads apart
    centres[1, 0], centres[2, 1] = 10.0, 10.0
    x = np.concatenate([c + rng.standard_normal((30, 13)) for c in centres])
    labels = diarize.k_means(x, 3)
    assert [len(set(labels[i : i + 30].tolist())) for i in (0, 30, 60)] == [1, 1, 1]
    np.testing.assert_array_equal(labels[[0, 30, 60]], [0, 1, 2])  # numbered as first met
    dist = np.linalg.norm(x[:, None] - x[None], axis=-1)  # the silhouette, point by point
    same = labels[:, None] == labels[None]
    own = (dist * same).sum(1) / (same.sum(1) - 1)
    mean_to = np.stack([dist[:, labels == c].mean(1) for c in range(3)], 1)  # (90, 3)
    other = np.where(labels[:, None] == np.arange(3), np.inf, mean_to).min(1)
    assert diarize.separation(x, labels) == pytest.approx(np.mean((other - own) / np.maximum(own, other)))
    assert diarize.count_voices(x, 3, "pitch+mfcc").max() == 2
    assert diarize.count_voices(x[:30], 3, "pitch+mfcc").max() == 0  # one blob is one voice


def test_each_voice_goes_to_a_different_person():
    # two voices, three mouths: both voices follow person 2's mouth best, voice 0 far better
    score = np.array([[0.1, 0.2, 1.5], [0.2, 0.9, 1.0]])
    np.testing.assert_array_equal(diarize.match_voices(score), [2, 1])
