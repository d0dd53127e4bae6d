"""tokenizer.kind='clip_bpe' gives exactly open_clip's token ids."""
import numpy as np
import pytest

pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from salmu_jax import config as config_lib  # noqa: E402
from salmu_jax.data import scenes, splits  # noqa: E402
from salmu_jax.data.tokenizer import CLIPTokenizer, find_clip_vocab, load_tokenizer  # noqa: E402
from salmu_jax.errors import ConfigError, DatasetError  # noqa: E402
from tests.conftest import config_path  # noqa: E402

ODD_PIECES = ["naïve", "CAFÉ", "Straße", "日本語", "😀", "&amp;", "&lt;b&gt;", "<end_of_text>",
              "it's", "THEY'LL", "+44 (0)20 7946 0958", "ES91 2100 0418 4502 0005 1332",
              "a.b@c-d.org", "\t", "  ", "\u00a0", "ﬁ", "Ｆｕｌｌ", "--", "...", "🇪🇸", "x" * 40]


def varied_captions(count: int = 1000) -> list:
  """SALMU-synth association and generic captions, scene captions, zero-shot prompts,
  and random mixes of accents, scripts, emoji, HTML entities, odd spaces, long runs."""
  config = config_lib.load_config(config_path("micro"))
  plan = splits.make_plan(config.data)
  texts = [e.caption for s in splits.SPLITS for e in plan.examples[s]][:300]
  texts += [e.generic_caption for e in plan.examples["retain_disjoint"]][:50]
  texts += [scenes.sample_scene(0, "train", i)["caption"] for i in range(200)]
  texts += [p for c in range(10) for p in scenes.zeroshot_prompts(c)[:4]]
  rng = np.random.default_rng(0)
  while len(texts) < count - 2:
    words = rng.choice(ODD_PIECES + texts[:50], size=rng.integers(1, 12))
    texts.append(" ".join(str(w) for w in words))
  return texts[:count - 2] + ["", " ".join(["long"] * 120)]  # Empty, and truncated.


def test_ids_equal_open_clip_on_a_thousand_captions():
  texts = varied_captions()
  assert len(texts) == 1000
  ours = CLIPTokenizer(find_clip_vocab(""), 77).encode(texts)
  theirs = open_clip.tokenize(texts).numpy()
  mismatched = [t for t, a, b in zip(texts, ours, theirs) if not np.array_equal(a, b)]
  assert not mismatched, mismatched[:3]
  # Models pool at argmax: the end-of-text token is each row's largest id.
  assert ours.dtype == np.int32 and (ours[np.arange(len(ours)), ours.argmax(-1)] == 49407).all()


def test_selected_by_config_and_bad_vocab_paths(tmp_path):
  config = config_lib.load_config(config_path("salmubench"))
  tokenizer = load_tokenizer(config.tokenizer, dataset_dir=str(tmp_path))
  assert (tokenizer.vocab_size, tokenizer.eot_id, tokenizer.context_length) == (49408, 49407, 77)
  assert tokenizer.decode(tokenizer.encode(["Hello,  World!"])[0]) == "hello , world !"
  with pytest.raises(ConfigError, match="not a file"):
    find_clip_vocab(str(tmp_path / "missing.txt.gz"))
  (tmp_path / "bad.txt.gz").write_bytes(b"not gzip")
  with pytest.raises(DatasetError, match="bad.txt.gz"):
    CLIPTokenizer(str(tmp_path / "bad.txt.gz"), 77)
