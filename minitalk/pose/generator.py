"""Head-pose generation for speaker and listener with a TCN (DialogueNeRF IV-A, Fig. 9-10).

A temporal convolutional network (Bai, Kolter and Koltun 2018) maps per-frame inputs to
per-frame head poses. Its convolutions are causal (a Conv1d padded by (k - 1) d on both sides,
its last (k - 1) d outputs chopped: `Chomp1d`), dilated (level i skips 2^i frames, so the
receptive field is 1 + 2 (k - 1) (2^L - 1) frames for L levels) and weight-normalised, in
residual blocks.

Two TCNs, used in turn (DialogueNeRF generates the speaker's pose f_p,s and
the listener's f_p,l):

    speaker:  ZCR, RMS of the speech                      -> speaker pose
    listener: ZCR, RMS of the speech, the speaker's pose  -> listener pose

The speaker's pose is generated first and fed to the listener's network. Neither network sees
its own past output, so generation cannot drift; poses are learned relative to each person's
mean pose, so the same networks serve both people, whichever role each has.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from minitalk.utils import get_device, set_seed

# --- the network (Bai et al. 2018) ----------------------------------------------------------


class Chomp1d(nn.Module):
    """Drop the last `size` time steps: turns a symmetric padding into a causal one."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, x):  # (B, C, T + size) -> (B, C, T)
        return x[:, :, : -self.size] if self.size else x


class TemporalBlock(nn.Module):
    """Two dilated causal convolutions with a residual connection."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        pad = (kernel_size - 1) * dilation
        layers = []
        for c in (c_in, c_out):
            layers += [
                weight_norm(nn.Conv1d(c, c_out, kernel_size, padding=pad, dilation=dilation)),
                Chomp1d(pad),
                nn.ReLU(),
                nn.Dropout(dropout),
            ]
        self.net = nn.Sequential(*layers)
        self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x):  # (B, C_in, T) -> (B, C_out, T)
        return torch.relu(self.net(x) + self.skip(x))


class TemporalConvNet(nn.Module):
    """A stack of TemporalBlocks with dilations 1, 2, 4, ..., and a linear read-out."""

    def __init__(self, n_in: int, n_out: int, channels: int, levels: int, kernel_size: int, dropout: float):
        super().__init__()
        self.kernel_size, self.levels = kernel_size, levels
        blocks = [
            TemporalBlock(n_in if i == 0 else channels, channels, kernel_size, 2**i, dropout)
            for i in range(levels)
        ]
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Conv1d(channels, n_out, 1)

    @property
    def receptive_field(self) -> int:
        """Frames of input that one output frame depends on."""
        return 1 + 2 * (self.kernel_size - 1) * (2**self.levels - 1)

    def forward(self, x):  # (B, n_in, T) -> (B, n_out, T)
        return self.head(self.blocks(x))


# --- training data: roles, normalisation, windows ------------------------------------------


@dataclass
class PoseConfig:
    channels: int = 32
    levels: int = 5  # receptive field 125 frames = 5 s at 25 fps with kernel 3
    kernel_size: int = 3
    dropout: float = 0.1
    lr: float = 2e-3
    epochs: int = 60  # one epoch: one window ending at every `stride`-th training frame
    window: int = 100  # frames per training window
    stride: int = 4  # frames between window ends
    batch: int = 64
    use_audio: bool = True  # the listener's ablations of DialogueNeRF Fig. 10
    use_speaker_pose: bool = True
    seed: int = 0


# DialogueNeRF V-A: Adam, lr 5e-5, 200 epochs (here an epoch ends a window at every frame).
# The default above reaches comparable held-out scores in a small fraction of the time;
# `python benchmarks/bench_pose.py --paper` trains and scores both.
PAPER_CONFIG = PoseConfig(lr=5e-5, epochs=200, stride=1)


def speaker_track(speaking: np.ndarray) -> np.ndarray:
    """Who holds the floor at each frame (T,) of who speaks when (P, T): the last person who spoke,
    through pauses (where two speak at once, the first of them)."""
    speaking = np.asarray(speaking, bool)
    speaker_now = np.where(speaking.any(0), speaking.argmax(0), -1)
    first = speaker_now[speaker_now >= 0][0] if np.any(speaker_now >= 0) else 0
    out = np.empty(len(speaker_now), np.int64)
    current = first
    for t, w in enumerate(speaker_now):
        current = w if w >= 0 else current
        out[t] = current
    return out


def turn_segments(speaker: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) frame ranges over which the speaker does not change."""
    cuts = np.flatnonzero(np.diff(speaker)) + 1
    bounds = np.concatenate([[0], cuts, [len(speaker)]])
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


LISTENER_STAGGER_S = 0.12  # a second listener reacts this much after the first, a third twice as much


def delayed(x: np.ndarray, frames: int) -> np.ndarray:
    """x (T, ...) later by `frames`, its first value held before it starts."""
    frames = min(frames, len(x))
    return x if frames == 0 else np.concatenate([np.repeat(x[:1], frames, 0), x[: len(x) - frames]])


def staggered(x: np.ndarray, speaker: np.ndarray, n_people: int, fps: float,
              stagger_s: float = LISTENER_STAGGER_S) -> np.ndarray:  # fmt: skip
    """(P, T, D): listening motion x (T, D) as each of `n_people` follows it. Within each turn the
    i-th listener, in order with the speaker left out, moves i x `stagger_s` later: people who hear
    one speaker react to the same speech, not in the same frame (DialogueNeRF's listener model
    takes only the speaker, so it gives every listener the same motion). The speaker's row is x."""
    out = np.repeat(x[None], n_people, 0)
    for a, b in turn_segments(speaker):
        listeners = [p for p in range(n_people) if p != speaker[a]]
        for i, p in enumerate(listeners):
            out[p, a:b] = delayed(x[a:b], int(round(i * stagger_s * fps)))
    return out


def moving_average(x: np.ndarray, n: int) -> np.ndarray:
    """Centred moving average of odd width n along axis 1 of (P, T, D), edges held."""
    padded = np.pad(x, ((0, 0), (n // 2, n // 2), (0, 0)), mode="edge")
    c = np.cumsum(np.pad(padded, ((0, 0), (1, 0), (0, 0))), axis=1)
    return (c[:, n:] - c[:, :-n]) / n


def audio_inputs(zcr: np.ndarray, rms: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(T, 2) normalised ZCR and RMS."""
    return np.stack([zcr / scale[0], rms / scale[1]], -1).astype(np.float32)


def listener_tracks(speaker: np.ndarray, n_people: int) -> list[np.ndarray]:
    """The listeners of who holds the floor (T,) among `n_people`: P - 1 tracks (T,), the i-th the
    i-th person other than the speaker at each frame (with two people the one other, 1 - speaker;
    with one person none: nobody listens)."""
    others = np.array([[q for q in range(n_people) if q != s] for s in range(n_people)], np.int64)
    return [others[speaker, i] for i in range(n_people - 1)]


def by_role(pose: np.ndarray, speaker: np.ndarray, listener: np.ndarray | None = None):
    """(T, 6) poses of whoever speaks and whoever listens at each frame (by default the first
    listener of `listener_tracks`)."""
    t = np.arange(len(speaker))
    listener = listener_tracks(speaker, len(pose))[0] if listener is None else listener
    return pose[speaker, t], pose[listener, t]


def as_clips(x) -> list:
    """One clip's array as a list of one; a list (or tuple) of clips as it is."""
    return list(x) if isinstance(x, (list, tuple)) else [x]


# --- the model ------------------------------------------------------------------------------


class PoseGenerator:
    """Speaker and listener TCNs plus the normalisation they were trained with."""

    def __init__(self, config: PoseConfig | None = None):
        self.config = config or PoseConfig()
        c = self.config
        n_listener_in = 2 * c.use_audio + 6 * c.use_speaker_pose
        if n_listener_in == 0:
            raise ValueError("the listener needs audio, speaker pose or both")
        set_seed(c.seed)
        net = dict(channels=c.channels, levels=c.levels, kernel_size=c.kernel_size, dropout=c.dropout)
        self.speaker_net = TemporalConvNet(2, 6, **net)
        self.listener_net = TemporalConvNet(n_listener_in, 6, **net)
        self.audio_scale = np.ones(2, np.float32)
        self.pose_mean = np.zeros((2, 6), np.float32)  # per person
        self.pose_std = np.ones(6, np.float32)
        self.history: list[float] = []  # training loss per epoch
        self.train_seconds = 0.0

    @property
    def receptive_field(self) -> int:
        return self.speaker_net.receptive_field

    def _listener_inputs(self, aud: torch.Tensor, spk: torch.Tensor) -> torch.Tensor:
        parts = ([aud] if self.config.use_audio else []) + ([spk] if self.config.use_speaker_pose else [])
        return torch.cat(parts, dim=1)

    # -- training --

    def fit(self, pose, speaking, zcr, rms, train_mask=None, device=None, progress=False):
        """Learn both networks from tracks: pose (2, T, 6), speaking (2, T), zcr and rms (T,); or
        lists of these, one per conversation, whose people are numbered in the order given (each
        keeps its own mean pose; the networks, which see poses relative to it, are shared).

        `train_mask` (T,) marks the frames whose poses may be learned from; the
        others (held-out) still feed the causal context as inputs, never as targets.
        """
        c = self.config
        device = device or get_device()
        clips = list(zip(*map(as_clips, (pose, speaking, zcr, rms)), strict=True))
        masks = as_clips(train_mask) if train_mask is not None else [None] * len(clips)
        masks = [
            np.ones(p.shape[1], bool) if m is None else m for (p, *_), m in zip(clips, masks, strict=True)
        ]
        all_zcr, all_rms = np.concatenate([z for *_, z, _ in clips]), np.concatenate([r for *_, r in clips])
        self.audio_scale = (
            np.array([np.percentile(all_zcr, 95), np.percentile(all_rms, 95)], np.float32) + 1e-8
        )
        self.pose_mean = np.concatenate(
            [
                np.stack([p[k, m].mean(0) for k in range(len(p))])
                for (p, *_), m in zip(clips, masks, strict=True)
            ]
        ).astype(np.float32)
        first = np.cumsum([0] + [len(p) for p, *_ in clips])  # each clip's first person
        rel = [p - self.pose_mean[a : a + len(p), None] for (p, *_), a in zip(clips, first, strict=False)]
        self.pose_std = (
            np.concatenate([r[:, m].reshape(-1, 6) for r, m in zip(rel, masks, strict=True)])
            .std(0)
            .astype(np.float32)
            + 1e-6
        )
        # per clip and listener: audio (T, 2), speaker and listener poses (T, 6), mask (T,); a clip
        # of three people is two speaker-listener pairs at every frame, a clip of one person none
        series = []
        windows = []  # (series, start, end): inside one turn, ending every `stride` frames, on trained frames
        for (_, talk, z, r), r_pose, m in zip(clips, rel, masks, strict=True):
            speaker = speaker_track(talk)
            for listener in listener_tracks(speaker, len(talk)):
                roles = by_role(r_pose / self.pose_std, speaker, listener)
                series.append((audio_inputs(z, r, self.audio_scale), *roles, m))
                for a, b in turn_segments(speaker):
                    for end in range(b, a, -c.stride):
                        if m[end - 1]:
                            windows.append((len(series) - 1, max(a, end - c.window), end))
        if not windows:
            raise ValueError("the motion models learn listening from a conversation: give at least one "
                             "clip of two or more people")  # fmt: skip
        gen = torch.Generator().manual_seed(c.seed)

        def batch_of(idx):
            n = max(e - s for _, s, e in (windows[i] for i in idx))
            x_a, x_s, y_s, y_l, m = (np.zeros((len(idx), n, d), np.float32) for d in (2, 6, 6, 6, 1))
            for j, i in enumerate(idx):
                clip, s, e = windows[i]
                aud, spk, lst, mask = series[clip]
                k = e - s  # right-aligned, zero history before the turn starts (as at generation)
                x_a[j, n - k :], x_s[j, n - k :] = aud[s:e], spk[s:e]
                y_s[j, n - k :], y_l[j, n - k :] = spk[s:e], lst[s:e]
                m[j, n - k :, 0] = mask[s:e]
            return [torch.from_numpy(v).transpose(1, 2).to(device) for v in (x_a, x_s, y_s, y_l, m)]

        nets = [self.speaker_net.to(device), self.listener_net.to(device)]
        params = [p for net in nets for p in net.parameters()]
        opt = torch.optim.Adam(params, lr=c.lr)
        for net in nets:
            net.train()
        self.history = []
        start = time.time()
        for epoch in range(c.epochs):
            order = torch.randperm(len(windows), generator=gen).tolist()
            total = 0.0
            for i in range(0, len(order), c.batch):
                x_a, x_s, y_s, y_l, m = batch_of(order[i : i + c.batch])
                pred_s = self.speaker_net(x_a)
                # teacher forcing: the listener learns from the real speaker's pose
                pred_l = self.listener_net(self._listener_inputs(x_a, x_s))
                loss = (((pred_s - y_s) ** 2 + (pred_l - y_l) ** 2) * m).sum() / (12 * m.sum())
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item()
            self.history.append(total / max(1, (len(order) + c.batch - 1) // c.batch))
            if progress:
                print(f"epoch {epoch + 1}/{c.epochs} loss {self.history[-1]:.4f}")
        for net in nets:
            net.eval().cpu()
        self.train_seconds = time.time() - start
        return self

    # -- generation --

    @torch.no_grad()
    def generate_roles(self, zcr, rms, speaker_pose=None):
        """Relative poses (T, 6) of the speaker and the listener for one stretch of speech.

        The listener is fed the generated speaker pose, or `speaker_pose` (T, 6,
        relative to the speaker's mean) when the speaker's real motion is known.
        """
        aud = torch.from_numpy(audio_inputs(zcr, rms, self.audio_scale)).T[None]  # (1, 2, T)
        std = torch.from_numpy(self.pose_std)[None, :, None]
        spk = self.speaker_net(aud)
        given = (
            spk
            if speaker_pose is None
            else torch.from_numpy(np.asarray(speaker_pose, np.float32)).T[None] / std
        )
        lst = self.listener_net(self._listener_inputs(aud, given))
        return (spk * std)[0].T.numpy(), (lst * std)[0].T.numpy()

    def generate_by_role(self, zcr, rms, speaking, real_pose=None):
        """Poses (T, 6) of whoever speaks and whoever listens, each turn from its own start.

        With `real_pose` (2, T, 6) the listener is fed the speaker's real motion
        instead of the generated one (the setting of DialogueNeRF Fig. 10).
        """
        speaker = speaker_track(speaking)
        spk_out, lst_out = np.zeros((2, len(speaker), 6), np.float32)
        for a, b in turn_segments(speaker):
            s = speaker[a]
            given = None if real_pose is None else real_pose[s, a:b] - self.pose_mean[s]
            spk, lst = self.generate_roles(zcr[a:b], rms[a:b], speaker_pose=given)
            spk_out[a:b] = spk + self.pose_mean[s]
            lst_out[a:b] = lst + self.pose_mean[1 - s]
        return spk_out, lst_out

    def generate(self, zcr, rms, speaking, fps: float = 25.0, crossfade_s: float = 0.4):
        """Poses (P, T, 6) of every person for new speech, given who speaks when (P, T): the speaker's
        from the audio, every listener's from the audio and the speaker's (`staggered` where
        several listen), each on their own mean pose.

        At a change of turn each person passes from one role to the other; a
        centred moving average over `crossfade_s` around each cut softens the switch.
        """
        speaker = speaker_track(speaking)
        t = np.arange(len(speaker))
        spk, lst = np.zeros((2, len(speaker), 6), np.float32)  # relative to each one's mean
        for a, b in turn_segments(speaker):
            spk[a:b], lst[a:b] = self.generate_roles(zcr[a:b], rms[a:b])
        out = (staggered(lst, speaker, len(speaking), fps) + self.pose_mean[:, None]).astype(np.float32)
        out[speaker, t] = spk + self.pose_mean[speaker]
        n = max(1, int(crossfade_s * fps)) | 1
        blurred = moving_average(out, n)
        near_cut = np.zeros(len(speaker), bool)
        for a, _ in turn_segments(speaker)[1:]:
            near_cut[max(0, a - n) : a + n] = True
        out[:, near_cut] = blurred[:, near_cut]
        return out

    # -- saving --

    def state_dict(self) -> dict:
        return {
            "config": asdict(self.config),
            "speaker_net": self.speaker_net.state_dict(),
            "listener_net": self.listener_net.state_dict(),
            "audio_scale": torch.from_numpy(self.audio_scale),
            "pose_mean": torch.from_numpy(self.pose_mean),
            "pose_std": torch.from_numpy(self.pose_std),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> PoseGenerator:
        model = cls(PoseConfig(**state["config"]))
        model.speaker_net.load_state_dict(state["speaker_net"])
        model.listener_net.load_state_dict(state["listener_net"])
        model.audio_scale = state["audio_scale"].numpy()
        model.pose_mean = state["pose_mean"].numpy()
        model.pose_std = state["pose_std"].numpy()
        model.speaker_net.eval(), model.listener_net.eval()
        return model
