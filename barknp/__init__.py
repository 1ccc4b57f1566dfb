"""barknp: Suno's Bark text-to-audio model in NumPy and Numba.

    import barknp
    model = barknp.load("suno/bark-small")
    audio = model.generate("Hello, world!", voice="v2/en_speaker_6", rng=0)   # (N,) float32, 24 kHz
    barknp.save_wav("hello.wav", audio)
"""

from .audio import save_wav
from .constants import SAMPLE_RATE
from .errors import BarkError, NoSpeechError
from .longform import generate_long, split_text
from .model import Bark, load
from .threads import set_num_threads

__all__ = ["Bark", "BarkError", "NoSpeechError", "SAMPLE_RATE", "generate_long", "load", "save_wav", "set_num_threads", "split_text"]
__version__ = "0.1.0"
