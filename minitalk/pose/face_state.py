"""Face states for new speech: the listener's expression, and everyone's blinks (DialogueNeRF Fig. 6).

A speaker's expression comes from the audio, through the NeRF's own audio encoder. A listener
has no audio of their own to follow: they respond to the speaker, with smiles, nods and
blinks. `ListenerExpression` is a causal TCN like the pose networks (`minitalk.pose.generator`)
from the speaker's ZCR, RMS and head pose to the listener's Eq. 1 expression coefficients,
relative to the person's mean: the responsive-listener mapping of the ViCo challenge.

Blinks are events, not a regression target: a network regressing the blink value predicts its
mean, eyes a little shut all the time. `BlinkModel` instead learns each person's blink rate in
each role and the shape of their blink from the tracks, and draws blinks as a renewal process
with that rate (and a refractory gap), seeded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from minitalk.pose.generator import (
    TemporalConvNet,
    as_clips,
    audio_inputs,
    listener_tracks,
    speaker_track,
    turn_segments,
)
from minitalk.utils import set_seed


@dataclass(frozen=True)
class ListenerConfig:
    channels: int = 32
    levels: int = 5  # receptive field 125 frames = 5 s at 25 fps, as the pose networks
    kernel_size: int = 3
    dropout: float = 0.1
    lr: float = 2e-3
    epochs: int = 40
    window: int = 100
    stride: int = 4
    batch: int = 64
    seed: int = 0


class ListenerExpression:
    """speaker ZCR, RMS, head pose (T, 2 + 6) -> the listener's expression coefficients (T, K)."""

    def __init__(self, n_expression: int, config: ListenerConfig | None = None):
        self.config = c = config or ListenerConfig()
        set_seed(c.seed)
        self.net = TemporalConvNet(8, n_expression, c.channels, c.levels, c.kernel_size, c.dropout)
        self.audio_scale = np.ones(2, np.float32)
        self.pose_mean = np.zeros((2, 6), np.float32)
        self.pose_std = np.ones(6, np.float32)
        self.expression_mean = np.zeros((2, n_expression), np.float32)
        self.expression_std = np.ones(n_expression, np.float32)

    def _inputs(self, zcr, rms, speaker_pose_rel) -> np.ndarray:
        return np.concatenate(
            [audio_inputs(zcr, rms, self.audio_scale), speaker_pose_rel / self.pose_std], -1
        )

    def fit(self, expression, pose, speaking, zcr, rms, train_mask=None) -> ListenerExpression:
        """expression (2, T, K), pose (2, T, 6), speaking (2, T), zcr and rms (T,) of a clip; or lists
        of these, one per conversation, whose people are numbered in the order given."""
        c = self.config
        clips = list(zip(*map(as_clips, (expression, pose, speaking, zcr, rms)), strict=True))
        masks = as_clips(train_mask) if train_mask is not None else [None] * len(clips)
        masks = [
            np.ones(p.shape[1], bool) if m is None else m for (_, p, *_), m in zip(clips, masks, strict=True)
        ]
        all_zcr, all_rms = np.concatenate([cl[3] for cl in clips]), np.concatenate([cl[4] for cl in clips])
        self.audio_scale = (
            np.array([np.percentile(all_zcr, 95), np.percentile(all_rms, 95)], np.float32) + 1e-8
        )
        self.pose_mean = np.concatenate([p[:, m].mean(1) for (_, p, *_), m in zip(clips, masks, strict=True)])
        self.pose_mean = self.pose_mean.astype(np.float32)
        self.expression_mean = np.concatenate(
            [e[:, m].mean(1) for (e, *_), m in zip(clips, masks, strict=True)]
        )
        self.expression_mean = self.expression_mean.astype(np.float32)
        first = np.cumsum([0] + [len(p) for _, p, *_ in clips])  # each clip's first person
        rel_pose = [
            p - self.pose_mean[a : a + len(p), None] for (_, p, *_), a in zip(clips, first, strict=False)
        ]
        rel = [
            e - self.expression_mean[a : a + len(e), None] for (e, *_), a in zip(clips, first, strict=False)
        ]
        self.pose_std = np.concatenate([r[:, m].reshape(-1, 6) for r, m in zip(rel_pose, masks, strict=True)])
        self.pose_std = self.pose_std.std(0) + 1e-6
        spread = np.concatenate([r[:, m].reshape(-1, r.shape[-1]) for r, m in zip(rel, masks, strict=True)])
        self.expression_std = (spread.std(0) + 1e-6).astype(np.float32)
        series = []  # per clip and listener: inputs (T, 8), the listener's targets (T, K), mask
        windows = []  # (series, start, end)
        for (_, _, talk, z, r), r_pose, r_exp, m in zip(clips, rel_pose, rel, masks, strict=True):
            speaker, t = speaker_track(talk), np.arange(talk.shape[1])
            x = self._inputs(z, r, r_pose[speaker, t]).astype(np.float32)
            for listener in listener_tracks(speaker, len(talk)):
                y = (r_exp[listener, t] / self.expression_std).astype(np.float32)  # the listener's, per frame
                series.append((x, y, m))
                windows += [
                    (len(series) - 1, max(a, end - c.window), end)
                    for a, b in turn_segments(speaker)
                    for end in range(b, a, -c.stride)
                    if m[end - 1]
                ]
        if not windows:
            raise ValueError("the listener's expression is learned from a conversation: give at least "
                             "one clip of two or more people")  # fmt: skip
        gen = torch.Generator().manual_seed(c.seed)
        opt = torch.optim.Adam(self.net.parameters(), lr=c.lr)
        self.net.train()
        for _ in range(c.epochs):
            order = torch.randperm(len(windows), generator=gen).tolist()
            for i in range(0, len(order), c.batch):
                idx = [windows[j] for j in order[i : i + c.batch]]
                n = max(e - s for _, s, e in idx)
                xb, yb, mb = (
                    np.zeros((len(idx), n, d), np.float32) for d in (8, len(self.expression_std), 1)
                )
                for j, (clip, s, e) in enumerate(idx):  # right-aligned: no history before the turn
                    x, y, m = series[clip]
                    xb[j, n - (e - s) :], yb[j, n - (e - s) :] = x[s:e], y[s:e]
                    mb[j, n - (e - s) :, 0] = m[s:e]
                xb, yb, mb = (torch.from_numpy(v).transpose(1, 2) for v in (xb, yb, mb))
                loss = (((self.net(xb) - yb) ** 2) * mb).sum() / (yb.shape[1] * mb.sum())
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.net.eval()
        return self

    @torch.no_grad()
    def generate(self, zcr, rms, speaker_pose, speaking) -> np.ndarray:
        """The listener's expression (T, K) for each turn of new speech, from its start, relative to
        the listener's mean (add a person's `expression_mean` to place it on their face); `speaker_pose`
        (T, 6) is the speaker's (generated) head pose."""
        speaker = speaker_track(speaking)
        out = np.zeros((len(speaker), len(self.expression_std)), np.float32)
        for a, b in turn_segments(speaker):
            s = speaker[a]
            x = self._inputs(zcr[a:b], rms[a:b], speaker_pose[a:b] - self.pose_mean[s]).astype(np.float32)
            y = self.net(torch.from_numpy(x).T[None])[0].T.numpy()
            out[a:b] = y * self.expression_std
        return out

    def state_dict(self) -> dict:
        to_t = torch.from_numpy
        return {
            "config": asdict(self.config),
            "net": self.net.state_dict(),
            **{name: to_t(np.asarray(getattr(self, name), np.float32)) for name in self.ARRAYS},
        }

    ARRAYS = ("audio_scale", "pose_mean", "pose_std", "expression_mean", "expression_std")

    EARLIER_NAMES = {"expression_mean": "exp_mean", "expression_std": "exp_std"}  # in older avatar files

    @classmethod
    def from_state_dict(cls, state: dict) -> ListenerExpression:
        state = {new: state[old] for new, old in cls.EARLIER_NAMES.items() if old in state} | state
        model = cls(int(state["expression_std"].shape[0]), ListenerConfig(**state["config"]))
        model.net.load_state_dict(state["net"])
        for name in cls.ARRAYS:
            setattr(model, name, state[name].numpy())
        model.net.eval()
        return model


# --- blinks ---------------------------------------------------------------------------------


BLINK_HALF_WIDTH = 4  # frames either side of a blink's peak kept in its profile (0.16 s at 25 fps)


def blink_events(blink: np.ndarray, threshold: float = 0.5, min_gap: int = 5) -> np.ndarray:
    """Frames (n,) where a blink peaks: local maxima above `threshold`, at least `min_gap` apart."""
    b = np.asarray(blink, np.float64)
    peaks = np.flatnonzero((b[1:-1] >= threshold) & (b[1:-1] >= b[:-2]) & (b[1:-1] > b[2:])) + 1
    kept: list[int] = []
    for p in peaks:
        if not kept or p - kept[-1] >= min_gap:
            kept.append(int(p))
    return np.asarray(kept, np.int64)


class BlinkModel:
    """Per person: blinks per second while speaking and while listening, and a mean blink profile."""

    def __init__(self, rate: np.ndarray, profile: np.ndarray, min_interval_s: float = 0.4):
        self.rate = np.asarray(rate, np.float32)  # (P, 2): [speaking, listening] blinks per second
        self.profile = np.asarray(profile, np.float32)  # (P, 2 * BLINK_HALF_WIDTH + 1), peak in the middle
        self.min_interval_s = min_interval_s

    @classmethod
    def fit(cls, blink: np.ndarray, speaking: np.ndarray, fps: float) -> BlinkModel:
        """From tracked blinks (P, T) in 0..1 and who speaks (P, T)."""
        h = BLINK_HALF_WIDTH
        rate, profile = np.zeros((len(blink), 2)), np.zeros((len(blink), 2 * h + 1))
        for p, b in enumerate(blink):
            events = blink_events(b)
            for role, frames in enumerate((speaking[p], ~speaking[p])):
                seconds = frames.sum() / fps
                rate[p, role] = frames[events].sum() / seconds if seconds > 0 else 0.0
            inner = events[(events >= h) & (events < len(b) - h)]
            profile[p] = np.mean([b[e - h : e + h + 1] for e in inner], 0) if len(inner) else 0.0
        return cls(rate, profile)

    def generate(self, speaking: np.ndarray, fps: float, seed: int = 0) -> np.ndarray:
        """Blinks (P, T) in 0..1 for who speaks when (P, T): events drawn frame by frame with the
        person's rate in their current role, never closer than `min_interval_s`."""
        rng = np.random.default_rng(seed)
        n_people, t_len = speaking.shape
        h = BLINK_HALF_WIDTH
        out = np.zeros((n_people, t_len + 2 * h), np.float32)
        gap = int(round(self.min_interval_s * fps))
        for p in range(n_people):
            last = -gap
            draws = rng.random(t_len)
            for t in range(t_len):
                rate = self.rate[p, 0 if speaking[p, t] else 1]
                if t - last >= gap and draws[t] < rate / fps:
                    out[p, t : t + 2 * h + 1] = np.maximum(out[p, t : t + 2 * h + 1], self.profile[p])
                    last = t
        return out[:, h : h + t_len]  # event t's profile is centred on frame t

    def state_dict(self) -> dict:
        return {"rate": torch.from_numpy(self.rate), "profile": torch.from_numpy(self.profile)}

    @classmethod
    def from_state_dict(cls, state: dict) -> BlinkModel:
        return cls(state["rate"].numpy(), state["profile"].numpy())
