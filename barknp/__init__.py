"""barknp: Suno's Bark text-to-audio model in NumPy and Numba.

    import barknp
    model = barknp.load("suno/bark-small")
    audio = model.generate("Hello, world!", voice="v2/en_speaker_6", rng=0)   # (N,) float32, 24 kHz
    barknp.save_wav("hello.wav", audio)
"""

# save_wav: added when barknp/audio.py lands
from .constants import SAMPLE_RATE
from .errors import BarkError
from .model import Bark, load

__all__ = ["Bark", "BarkError", "SAMPLE_RATE", "load"]
__version__ = "0.1.0"
