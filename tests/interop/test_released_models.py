"""An imported OpenCLIP model scored and unlearned on data in the released layout."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("open_clip")

from salmu_jax import config as config_lib  # noqa: E402
from salmu_jax.evaluation import evaluator  # noqa: E402
from salmu_jax.interop import runs  # noqa: E402
from salmu_jax.training import runtime as runtime_lib  # noqa: E402
from salmu_jax.unlearning import runner  # noqa: E402
from salmu_jax.data import builder, layout, pipeline  # noqa: E402
from salmu_jax.data.tokenizer import load_tokenizer  # noqa: E402
from tests import released_fixture  # noqa: E402
from tests.interop.test_weights import openclip_model, save_state_dict, torch_pixels  # noqa: E402
from tests.test_released import released_config  # noqa: E402


def test_imported_model_evaluates_and_unlearns_on_released_data(tmp_path):
  released_fixture.write_fixture(str(tmp_path / "salmubench"))
  config = released_config(tmp_path / "salmubench")
  config.model = config_lib.model_config("tiny", dtype="float32", patch_size=16)
  config.reference = "compromised"
  config = config_lib.check_config(config)
  dataset_dir = builder.build_dataset(config, str(tmp_path / "work"), progress=False)
  peer = openclip_model(config, seed=5)
  save_state_dict(peer.state_dict(), tmp_path / "model.safetensors")
  run_dir = str(tmp_path / "compromised")
  runs.convert(f"openclip:{tmp_path}/model.safetensors", run_dir, config)

  scorer = evaluator.Evaluator(runtime_lib.setup(config, run_dir, dataset_dir))
  scores = scorer.score_checkpoint(run_dir)
  keys = {group: sorted(scores[group]) for group in ("efficacy", "utility")}
  assert keys == {"efficacy": ["1.1_RetFail", "1.2_AssocStr", "1.3_ACS", "1.4_IdZSC",
                               "1.5_CoreAssoc"],
                  "utility": ["2.1_GenKnow", "2.2_InterIdSim", "2.3_IntraIdSim",
                              "2.4_VisIdInt", "2.5_FragSim"]}
  assert scores["efficacy"]["1.4_IdZSC"]["classes"] == 6  # Every published identity's name.
  assert scores["utility"]["2.5_FragSim"]["count"] == len(released_fixture.FRAGILE)
  # AssocStr and InterIdSim as open_clip computes them on the same records: PyTorch
  # embeddings of the decoded, resized published images and of the tokenized captions.
  tokenizer = load_tokenizer(config.tokenizer, dataset_dir)
  dataset = layout.open_dataset(dataset_dir)
  for group, key, split in (("efficacy", "1.2_AssocStr", "forget"),
                            ("utility", "2.2_InterIdSim", "holdout_identity")):
    records = [dataset.decoded(split, i) for i in range(len(dataset.splits[split]))]
    pixels = np.stack([pipeline.fit_image(r["image"], config.data.image_size)
                       for r in records]).astype(np.float32)
    with torch.no_grad():
      image = peer.encode_image(torch_pixels(pixels), normalize=True).numpy()
      text = peer.encode_text(torch.from_numpy(tokenizer.encode([r["caption"] for r in records])
                                               .astype(np.int64)), normalize=True).numpy()
    expected = float(np.mean(np.sum(image * text, axis=-1)))
    assert scores[group][key]["mean"] == pytest.approx(expected, abs=1e-4)
    assert scores[group][key]["count"] == len(records)

  result = runner.Unlearner(config, run_dir, dataset_dir=dataset_dir,
                            runtime=scorer.runtime).run(
      "neg_grad", 1.0, str(tmp_path / "neg_grad"), show_progress=False)
  assert result["steps"] >= 1 and result["forget_size"] == 24
  after = scorer.score_checkpoint(str(tmp_path / "neg_grad"))
  assert after["efficacy"]["1.2_AssocStr"]["mean"] != scores["efficacy"]["1.2_AssocStr"]["mean"]
