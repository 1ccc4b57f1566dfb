"""The text tokenizer against transformers' BertTokenizer on the real multilingual vocabulary.

transformers 5's BertTokenizer is the tokenizers-backed class, which lacks one step of the Python
class of transformers 4 that Bark called: Unicode NFC composition after cleaning. So the reference
here gets each text already composed; the decomposed texts below check that barknp composes them.
"""

import shutil
import unicodedata
from pathlib import Path

import pytest

from barknp.errors import BarkError
from barknp.generation.tokenizer import load_tokenizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BERT_DIR = DATA / "bert-base-multilingual-cased"

TEXTS = [
    "Hello, my dog is cute [laughs] and I need him in my life.",
    "[clears throat] ... [music] hmm — uh, [sighs] [gasps] [MAN] [WOMAN]",
    "♪ In the jungle, the mighty jungle ♪",
    "你好，世界！我是一只猫。今天天气很好。",
    "こんにちは、カタカナとひらがな。漢字も。",
    "안녕하세요, 만나서 반갑습니다",
    "नमस्ते दुनिया, आप कैसे हैं?",
    "Привет, мир! Ёлка.",
    "Café naïve résumé Ångström façade coöperate",
    "Größe Straße ÇA ĞÜŞİÖ ł ż ń",
    "emoji 😀🎉 👍🏽 family 👨‍👩‍👧 flags 🇫🇷",
    "  odd\twhite\n\nspace\u00a0nbsp\u3000ideographic\u2009thin  ",
    "control\x00chars\x07and\x1bescape",
    "“curly quotes” ‘single’ — em–en dash… ellipsis",
    "[MASK] [UNK] [CLS] [SEP] [PAD] literal special tokens",
    "x" * 150,
    "numbers 3.14159 1,000,000 2nd 10%",
    "",
    # decomposed (NFD) text and singletons that NFC replaces: the reference composes them first
    unicodedata.normalize("NFD", "Café naïve résumé Ångström Tiếng Việt"),
    unicodedata.normalize("NFD", "안녕하세요, 만나서 반갑습니다"),
    "\u2126 ohm, \u212b angstrom",
]


@pytest.fixture(scope="module")
def reference():
    if not (BERT_DIR / "vocab.txt").is_file():
        pytest.skip(f"bert-base-multilingual-cased not found at {BERT_DIR}")
    transformers = pytest.importorskip("transformers", reason="the reference BertTokenizer needs transformers")
    return transformers.BertTokenizer(str(BERT_DIR / "vocab.txt"), do_lower_case=False)


@pytest.fixture(scope="module")
def ours_json(tmp_path_factory):
    if not (BERT_DIR / "tokenizer.json").is_file():
        pytest.skip(f"tokenizer.json not found in {BERT_DIR}")
    d = tmp_path_factory.mktemp("json_only")
    shutil.copy(BERT_DIR / "tokenizer.json", d / "tokenizer.json")
    tok = load_tokenizer(d)
    assert tok.source.endswith("tokenizer.json")
    return tok


def test_vocab_txt_is_preferred_when_both_are_present():
    missing = [f for f in ("vocab.txt", "tokenizer.json") if not (BERT_DIR / f).is_file()]
    if missing:
        pytest.skip(f"bert-base-multilingual-cased's {' and '.join(missing)} not found in {BERT_DIR}")
    assert load_tokenizer(BERT_DIR).source.endswith("vocab.txt")


@pytest.fixture(scope="module")
def ours_vocab(tmp_path_factory, reference):
    d = tmp_path_factory.mktemp("vocab_only")
    shutil.copy(BERT_DIR / "vocab.txt", d / "vocab.txt")
    tok = load_tokenizer(d)
    assert tok.source.endswith("vocab.txt")
    return tok


@pytest.mark.reference
@pytest.mark.parametrize("text", TEXTS)
def test_tokenizer_json_matches_bert(reference, ours_json, text):
    want = reference.encode(unicodedata.normalize("NFC", text), add_special_tokens=False)
    got = ours_json.encode(text)
    assert got == want, f"{text!r}: ours {got} reference {want}"


@pytest.mark.reference
@pytest.mark.parametrize("text", TEXTS)
def test_vocab_txt_fallback_matches_bert(reference, ours_vocab, text):
    want = reference.encode(unicodedata.normalize("NFC", text), add_special_tokens=False)
    got = ours_vocab.encode(text)
    assert got == want, f"{text!r}: ours {got} reference {want}"


def test_composition_follows_cleaning(ours_json, ours_vocab):
    """A combining accent separated from its letter by a control character composes once cleaning
    has removed the character, as in the reference's order (clean, then NFC): "é x"'s ids."""
    want = ours_json.encode("\u00e9 x")
    assert want != ours_json.encode("e x")
    for tok in (ours_json, ours_vocab):
        assert tok.encode("e\x00\u0301 x") == want


def test_no_special_tokens_and_known_ids(ours_json):
    ids = ours_json.encode("Hello world")
    assert 101 not in ids and 102 not in ids  # [CLS], [SEP]
    assert ids == [31178, 11356]
    assert ours_json.vocab_size == 119547


def test_missing_tokenizer_folder(tmp_path):
    with pytest.raises(BarkError, match="no tokenizer.json or vocab.txt"):
        load_tokenizer(tmp_path)


def test_corrupt_tokenizer_json(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(BarkError, match="cannot parse tokenizer"):
        load_tokenizer(tmp_path)


def test_encode_rejects_non_str(ours_json):
    with pytest.raises(BarkError):
        ours_json.encode(b"bytes")
