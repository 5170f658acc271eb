"""Stage 4, a new conversation from new speech (notebook 06): `minitalk render`.

avatar.py  the avatar file, packed and loaded: the model and what turns new speech into its inputs
roles.py   who speaks when in new audio, each voice matched to a person by voice prints
render.py  roles -> head poses -> face states -> frames -> an mp4 with the audio
"""

from minitalk import lazy_submodules

__getattr__ = lazy_submodules(__name__, ("avatar", "roles", "render"))
