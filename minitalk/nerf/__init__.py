"""Stage 3, the radiance field (notebooks 04 and 05): rays, rendering, the DialogueNeRF model and
its training.

    rays.py        ray helpers: NumPy references, dispatch to the fast twins; occupancy grids
    kernels.py     every Numba kernel (the rays' and the compositing's), tested against the references
    rays_torch.py  the torch twins of the ray helpers (any device)
    encoding.py    sinusoidal (Eq. 2) and tri-plane position encodings
    render.py      compositing (Eq. 4-5) and the renderer, which takes the fields as callables
    static.py      a small static NeRF, the from-scratch example of notebook 04
    model.py       DialogueNeRF: head and torso fields for every person, their conditions
    frames.py      a prepared folder as tensors: images, pixel weights, cameras, face states; the
                   scene statistics that turn new motion into the model's inputs
    train.py       the training loop (resumable, Ctrl-C safe)
    evaluate.py    held-out PSNR / SSIM per person and role, mouth measures
    checkpoint.py  checkpoints, the slimmed export, and loading either to render
"""

from minitalk import lazy_submodules

__getattr__ = lazy_submodules(
    __name__,
    (
        "rays",
        "kernels",
        "rays_torch",
        "encoding",
        "render",
        "static",
        "model",
        "frames",
        "train",
        "evaluate",
        "checkpoint",
    ),
)
