"""Text preprocessing and tokenization behind one interface.

`normalize_text` is the single definition of caption preprocessing (Unicode
NFKC, lower-casing, whitespace folding); training, retrieval and zero-shot
prompts all pass through it, so their numbers agree. A `Tokenizer` maps texts to
fixed-length int32 token arrays laid out as OpenAI/OpenCLIP do:
[sot, tokens..., eot, pad...], truncated so that eot always survives; models pool
at the eot position (`eot_id` is the largest id in each row, as in OpenCLIP).
"""
import os
import re
import unicodedata
from typing import Protocol, Sequence

import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from salmu_jax.errors import ConfigError, DatasetError

PAD, SOT, EOT = "<pad>", "<start_of_text>", "<end_of_text>"
TOKENIZER_FILE = "tokenizer.json"


def normalize_text(text: str) -> str:
  text = unicodedata.normalize("NFKC", text)
  return re.sub(r"\s+", " ", text).strip().lower()


class Tokenizer(Protocol):
  vocab_size: int
  context_length: int
  pad_id: int
  sot_id: int
  eot_id: int

  def encode(self, texts: Sequence[str]) -> np.ndarray:
    """int32[len(texts), context_length]."""


class BPETokenizer:
  """A byte-level BPE trained on the dataset's own captions (the embedded default).

  The vocabulary puts <pad>=0 first and <end_of_text> last, so that, as in
  OpenCLIP, `argmax(tokens)` finds the end-of-text position.
  """

  def __init__(self, backend: tokenizers.Tokenizer, context_length: int):
    self._backend = backend
    self.context_length = context_length
    self.vocab_size = backend.get_vocab_size()
    self.pad_id = backend.token_to_id(PAD)
    self.sot_id = backend.token_to_id(SOT)
    self.eot_id = backend.token_to_id(EOT)
    if self.pad_id != 0 or self.eot_id != self.vocab_size - 1:
      raise DatasetError(
          f"tokenizer vocabulary must have {PAD}=0 and {EOT} last; got pad={self.pad_id}, "
          f"eot={self.eot_id}, size={self.vocab_size}")

  @classmethod
  def train(cls, texts, vocab_size: int, context_length: int) -> "BPETokenizer":
    backend = tokenizers.Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1, special_tokens=[PAD, SOT], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator((normalize_text(t) for t in texts), trainer=trainer)
    backend.add_special_tokens([EOT])
    return cls(backend, context_length)

  @classmethod
  def load(cls, path: str, context_length: int) -> "BPETokenizer":
    if not os.path.exists(path):
      raise DatasetError(f"no tokenizer at {path}; rebuild the dataset with salmu_jax.make_dataset")
    return cls(tokenizers.Tokenizer.from_file(path), context_length)

  def save(self, path: str) -> None:
    from salmu_jax.io_utils import write_bytes_atomic
    write_bytes_atomic(path, self._backend.to_str().encode())

  def token_lengths(self, texts: Sequence[str]) -> np.ndarray:
    """Tokens per text before padding or truncation, sot and eot included."""
    return np.array([len(e.ids) + 2 for e in
                     self._backend.encode_batch([normalize_text(t) for t in texts])])

  def encode(self, texts: Sequence[str]) -> np.ndarray:
    out = np.full((len(texts), self.context_length), self.pad_id, np.int32)
    encodings = self._backend.encode_batch([normalize_text(t) for t in texts])
    for row, encoding in enumerate(encodings):
      ids = encoding.ids[:self.context_length - 2]
      out[row, 0] = self.sot_id
      out[row, 1:len(ids) + 1] = ids
      out[row, len(ids) + 1] = self.eot_id
    return out

  def decode(self, tokens: np.ndarray) -> str:
    ids = [int(t) for t in tokens if int(t) not in (self.pad_id, self.sot_id, self.eot_id)]
    return self._backend.decode(ids)


def load_tokenizer(tokenizer_config, dataset_dir: str) -> Tokenizer:
  """The tokenizer a config names. ('clip_bpe', OpenCLIP's vocabulary, joins here later.)"""
  if tokenizer_config.kind == "dataset_bpe":
    return BPETokenizer.load(os.path.join(dataset_dir, TOKENIZER_FILE),
                             tokenizer_config.context_length)
  raise ConfigError(f"tokenizer.kind={tokenizer_config.kind!r} is not a known tokenizer")
