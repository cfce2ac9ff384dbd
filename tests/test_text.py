import json
import os
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from defr import vocab
from defr.cli import main
from defr.errors import ConfigError
from defr.model import embeddings, text
from defr.model.embedding_plot import tsne_2d

SENTENCES = ["a person riding a bicycle", "a person riding a bike", "a dog eating a banana", "a person and a toaster"]
CLASSES = ["ride bicycle", "ride horse", "ride motorcycle", "hold cup", "hold umbrella", "eat pizza", "jump skis"]
MODEL_FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]


@pytest.fixture(scope="module")
def minilm():
    return text.load_text_encoder("minilm")


def link_model_files(dest: Path) -> Path:
    """A plain transformers directory holding MiniLM's files (symlinks: no 90 MB copy)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        (dest / name).symlink_to(text.minilm_dir() / name)
    return dest


def gram(x: torch.Tensor) -> torch.Tensor:
    return x.double() @ x.double().t()


# --- encoders ----------------------------------------------------------------------------------------------------


def test_minilm_offline_unit_rows_and_meaning(minilm):
    emb = minilm.encode(SENTENCES)
    assert minilm.name == "minilm" and minilm.dim == 384
    assert emb.shape == (4, 384) and emb.dtype == torch.float32
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(4))
    sim = emb @ emb.t()
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[0, 1] > sim[0, 3] + 0.3
    assert minilm.encode([]).shape == (0, 384)
    assert not minilm.model.training and next(minilm.model.parameters()).device.type == "cpu"


def test_minilm_matches_sentence_transformers(minilm):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    reference = sentence_transformers.SentenceTransformer(str(text.minilm_dir()), device="cpu")
    expected = torch.from_numpy(reference.encode(SENTENCES, normalize_embeddings=True))
    torch.testing.assert_close(minilm.encode(SENTENCES), expected, atol=1e-5, rtol=0)


def test_batches_match_one_sentence_at_a_time(minilm):
    sentences = [*SENTENCES, "a person " + "holding a very long umbrella " * 12]
    one_by_one = text.TransformersTextEncoder("x", minilm.model, minilm.tokenizer, "mean", batch_size=1)
    torch.testing.assert_close(minilm.encode(sentences), one_by_one.encode(sentences), atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="list of strings"):
        minilm.encode("a person riding a bicycle")


def test_mean_pool_ignores_padding():
    torch.manual_seed(0)
    hidden = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]])
    expected = torch.stack([hidden[b, : int(mask[b].sum())].mean(0) for b in range(3)])
    torch.testing.assert_close(text.mean_pool(hidden, mask), expected)


def test_local_directories_and_pooling(minilm, tmp_path):
    plain = link_model_files(tmp_path / "plain")
    torch.testing.assert_close(text.load_text_encoder(str(plain)).encode(SENTENCES), minilm.encode(SENTENCES))

    cls = text.load_text_encoder(f"{plain}#cls")
    batch = minilm.tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = F.normalize(minilm.model(**batch).last_hidden_state[:, 0], dim=-1)
    torch.testing.assert_close(cls.encode(SENTENCES), expected, atol=1e-5, rtol=0)
    assert not torch.allclose(cls.encode(SENTENCES), minilm.encode(SENTENCES), atol=1e-2)

    st = link_model_files(tmp_path / "st")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    (st / "modules.json").write_text(json.dumps(modules))
    (st / "1_Pooling").mkdir()
    pooling = {"word_embedding_dimension": 384, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}
    (st / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    torch.testing.assert_close(text.load_text_encoder(str(st)).encode(SENTENCES), cls.encode(SENTENCES))
    torch.testing.assert_close(text.load_text_encoder(f"{st}#mean").encode(SENTENCES), minilm.encode(SENTENCES))

    modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (st / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ConfigError, match="Dense.*not supported"):
        text.load_text_encoder(str(st))
    with pytest.raises(ConfigError, match="no config.json"):
        text.load_text_encoder(str(tmp_path))


def test_hf_repo_from_the_cache(minilm, tmp_path, monkeypatch):
    import huggingface_hub.constants

    repo = tmp_path / "models--defr-test--minilm"
    link_model_files(repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = text.load_text_encoder("hf:defr-test/minilm")
    assert encoder.name == "hf:defr-test/minilm" and encoder.dim == 384
    torch.testing.assert_close(encoder.encode(SENTENCES), minilm.encode(SENTENCES))


def test_hf_repo_not_cached_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"hf:defr-test/no-such-model.*could not be found offline.*local"):
        text.load_text_encoder("hf:defr-test/no-such-model#cls")
    assert time.perf_counter() - start < 5


@pytest.mark.slow
def test_clip_random_text_tower():
    encoder = text.load_text_encoder("clip:ViT-B-32:random")
    emb = encoder.encode(SENTENCES)
    assert encoder.name == "clip:ViT-B-32:random" and encoder.dim == 512 and emb.shape == (4, 512)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(4))
    assert encoder.model.visual is None and not encoder.model.training


@pytest.mark.slow
def test_clip_weights_file(tmp_path):
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-S-32", pretrained=None).eval()
    path = tmp_path / "clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    encoder = text.load_text_encoder(f"clip:ViT-S-32:{path}")
    with torch.no_grad():
        expected = F.normalize(model.encode_text(open_clip.get_tokenizer("ViT-S-32")(SENTENCES)), dim=-1)
    assert encoder.dim == 384
    torch.testing.assert_close(encoder.encode(SENTENCES), expected, atol=1e-5, rtol=0)

    pickled = tmp_path / "pickled.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "code": Path("/")}, pickled)
    with pytest.raises(ConfigError, match="cannot load"):
        text.load_text_encoder(f"clip:ViT-S-32:{pickled}")
    with pytest.raises(ConfigError, match="no such weights file"):
        text.load_text_encoder(f"clip:ViT-S-32:{tmp_path / 'missing' / 'clip.pt'}")


def test_clip_names_that_cannot_load(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="unknown open_clip model 'ViT-Nope'"):
        text.load_text_encoder("clip:ViT-Nope")
    with pytest.raises(ConfigError, match="no tag 'nope' for ViT-B-32.*openai"):
        text.load_text_encoder("clip:ViT-B-32:nope")
    with pytest.raises(ConfigError, match="could not fetch the weights of tag 'openai'.*pass the file"):
        text.load_text_encoder("clip:ViT-B-32")


@pytest.mark.parametrize("name", ["bogus", "", "hf:org/model#max"])
def test_unknown_encoder_names(name):
    with pytest.raises(ConfigError, match="unknown"):
        text.load_text_encoder(name)


# --- prompts and class embeddings --------------------------------------------------------------------------------


def test_class_prompts_use_the_vocabulary_phrases():
    hico = vocab.hico()
    assert text.class_prompts(hico.class_names) == hico.prompts()
    prompts = text.class_prompts(["ride bicycle", "paint wall", "sit_on park_bench"], ("{}", "a photo of {}."))
    assert prompts == [
        ["a person riding a bicycle", "a photo of a person riding a bicycle."],
        ["a person painting a wall", "a photo of a person painting a wall."],
        ["a person sitting on a park bench", "a photo of a person sitting on a park bench."],
    ]
    with pytest.raises(ConfigError, match="'jump' is not 'verb object'"):
        text.class_prompts(["jump"])
    with pytest.raises(ConfigError, match="has no '{}'"):
        text.class_prompts(["ride bicycle"], ("a photo",))


def test_class_embeddings_average_the_templates(minilm):
    templates = ("{}", "a photo of {}.", "an image showing {}")
    prompts = text.class_prompts(CLASSES[:3], templates)
    by_hand = torch.stack([F.normalize(minilm.encode(p).mean(0), dim=0) for p in prompts])
    emb = text.class_embeddings(minilm, prompts)
    assert emb.shape == (3, 384)
    torch.testing.assert_close(emb, by_hand, atol=1e-6, rtol=0)
    ragged = text.class_embeddings(minilm, [prompts[0], prompts[1][:1]])
    torch.testing.assert_close(ragged, torch.stack([by_hand[0], minilm.encode(prompts[1][:1])[0]]), atol=1e-6, rtol=0)
    with pytest.raises(ConfigError, match="at least one prompt"):
        text.class_embeddings(minilm, [prompts[0], []])


def low_rank_rows(num: int, rank: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(num, rank, generator=g) @ torch.randn(rank, size, generator=g), dim=-1)


@pytest.mark.parametrize(("num", "rank", "size", "dim"), [(40, 6, 64, 8), (40, 8, 64, 8), (5, 5, 64, 16)])
def test_projection_keeps_inner_products_when_rank_fits(num, rank, size, dim):
    emb = low_rank_rows(num, rank, size)
    out = text.project_embeddings(emb, dim)
    assert out.shape == (num, dim) and out.dtype == emb.dtype
    torch.testing.assert_close(gram(out), gram(emb), atol=1e-5, rtol=0)


def test_projection_of_full_rank_rows_is_the_truncated_svd():
    emb = low_rank_rows(30, 20, 24)
    u, s, _ = torch.linalg.svd(emb.double(), full_matrices=False)
    reference = F.normalize(u[:, :8] * s[:8], dim=-1)  # the rank-8 SVD coordinates, which span the same space
    out = text.project_embeddings(emb, 8)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(30))
    torch.testing.assert_close(gram(out), gram(reference), atol=1e-5, rtol=0)
    assert not torch.allclose(gram(out), gram(emb), atol=1e-2)


def test_projection_identity_and_padding():
    emb = low_rank_rows(6, 6, 10)
    torch.testing.assert_close(text.project_embeddings(emb, 10), emb)
    padded = text.project_embeddings(emb, 16)
    assert padded.shape == (6, 16) and padded[:, 10:].abs().max() == 0
    torch.testing.assert_close(padded[:, :10], emb)
    with pytest.raises(ConfigError, match=r"\[C, T\]"):
        text.project_embeddings(emb[0], 4)


def test_language_init_of_a_smaller_backbone_keeps_the_text_geometry(minilm):
    from defr.model import build_model

    model = build_model("tiny-vit", CLASSES, image_size=64, templates=("{}", "a photo of {}."), encoder=minilm)
    emb = text.class_embeddings(minilm, text.class_prompts(CLASSES, ("{}", "a photo of {}.")))
    assert model.classifier.shape == (len(CLASSES), 192) and model.cfg.init["text_encoder"] == "minilm"
    torch.testing.assert_close(gram(model.classifier.detach()), gram(emb), atol=1e-5, rtol=0)


# --- embeddings files --------------------------------------------------------------------------------------------


def test_embeddings_file_round_trip(tmp_path):
    prompts = text.class_prompts(CLASSES, ("{}", "a photo of {}."))
    emb = low_rank_rows(len(CLASSES), 5, 12)
    path = tmp_path / "emb.safetensors"
    embeddings.save_embeddings(path, emb, prompts, CLASSES, "minilm")
    loaded, meta = embeddings.load_embeddings(path)
    torch.testing.assert_close(loaded, emb)
    assert meta == {"format": "defr-embeddings/1", "encoder": "minilm", "class_names": CLASSES, "prompts": prompts}
    assert os.listdir(tmp_path) == ["emb.safetensors"]
    with pytest.raises(ConfigError, match="do not match 6 class names"):
        embeddings.save_embeddings(path, emb, prompts, CLASSES[:6], "minilm")


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    import safetensors.torch

    path = tmp_path / "emb.safetensors"
    emb = low_rank_rows(2, 2, 4)
    embeddings.save_embeddings(path, emb, [["a"], ["b"]], ["ride bicycle", "hold cup"], "minilm")

    def broken(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        embeddings.save_embeddings(path, emb * 0, [["a"], ["b"]], ["ride bicycle", "hold cup"], "minilm")
    torch.testing.assert_close(embeddings.load_embeddings(path)[0], emb)
    assert os.listdir(tmp_path) == ["emb.safetensors"]


def test_bad_embeddings_files(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(ConfigError, match="no such embeddings file"):
        embeddings.load_embeddings(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ConfigError, match="not a defr embeddings file \\(not safetensors"):
        embeddings.load_embeddings(garbage)
    other = tmp_path / "other.safetensors"
    save_file({"embeddings": torch.zeros(2, 3)}, str(other), metadata={"format": "defr-checkpoint/1"})
    with pytest.raises(ConfigError, match="header format 'defr-checkpoint/1'"):
        embeddings.load_embeddings(other)
    save_file({"embeddings": torch.zeros(2, 3)}, str(other), metadata={"format": "defr-embeddings/1"})
    with pytest.raises(ConfigError, match="broken defr embeddings header"):
        embeddings.load_embeddings(other)


# --- command line ------------------------------------------------------------------------------------------------


@pytest.fixture
def class_file(tmp_path) -> Path:
    path = tmp_path / "classes.txt"
    path.write_text("\n".join(CLASSES) + "\n\n")
    return path


def test_embed_labels_command(minilm, class_file, tmp_path):
    out = tmp_path / "out" / "emb.safetensors"
    args = ["embed-labels", "--encoder", "minilm", "--out", str(out), "--classes", str(class_file)]
    result = CliRunner().invoke(main, [*args, "--template", "{}", "--template", "a photo of {}."])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(f"{len(CLASSES)} classes × 384 dims from minilm, 2 template(s)")
    emb, meta = embeddings.load_embeddings(out)
    prompts = text.class_prompts(CLASSES, ("{}", "a photo of {}."))
    assert meta["class_names"] == CLASSES and meta["prompts"] == prompts
    torch.testing.assert_close(emb, text.class_embeddings(minilm, prompts), atol=1e-6, rtol=0)


@pytest.mark.slow
def test_embed_labels_default_hico_classes(tmp_path):
    out = tmp_path / "hico.safetensors"
    result = CliRunner().invoke(main, ["embed-labels", "--encoder", "minilm", "--out", str(out)])
    assert result.exit_code == 0, result.output
    emb, meta = embeddings.load_embeddings(out)
    assert emb.shape == (600, 384) and meta["class_names"] == vocab.hico().class_names


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--encoder", "bogus"], "unknown text encoder 'bogus'"),
        (["--encoder", "minilm", "--classes", "{tmp}/missing.txt"], "missing.txt: cannot read class names"),
        (["--encoder", "minilm", "--template", "a photo"], "has no '{}'"),
    ],
)
def test_embed_labels_errors(tmp_path, extra, message):
    extra = [arg.replace("{tmp}", str(tmp_path)) for arg in extra]
    result = CliRunner().invoke(main, ["embed-labels", "--out", str(tmp_path / "e.safetensors"), *extra])
    assert result.exit_code == 1 and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_plot_embeddings_command(minilm, tmp_path):
    from PIL import Image

    prompts = text.class_prompts(CLASSES)
    path = tmp_path / "emb.safetensors"
    embeddings.save_embeddings(path, text.class_embeddings(minilm, prompts), prompts, CLASSES, "minilm")
    out = tmp_path / "tsne.png"
    args = ["plot-embeddings", "--embeddings", str(path), "--out", str(out), "--perplexity", "3"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"t-SNE of {len(CLASSES)} classes embedded by minilm" in result.output
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 500
    assert sorted(os.listdir(tmp_path)) == [".defr-outputs.json", "emb.safetensors", "tsne.png"]  # + the seam's record

    result = CliRunner().invoke(main, [*args[:-1], "30"])
    assert result.exit_code == 1 and "perplexity must be in (0, 7)" in result.output
    for options in ([], ["--embeddings", str(path), "--encoder", "minilm"]):
        result = CliRunner().invoke(main, ["plot-embeddings", *options, "--out", str(out)])
        assert result.exit_code == 1 and "exactly one of --embeddings and --encoder" in result.output


def test_tsne_is_seeded():
    emb = low_rank_rows(12, 6, 16)
    first = tsne_2d(emb, perplexity=3, seed=1)
    assert first.shape == (12, 2)
    assert (first == tsne_2d(emb, perplexity=3, seed=1)).all()


@pytest.mark.slow
def test_plot_embeddings_from_an_encoder(tmp_path):
    out = tmp_path / "hico.png"
    result = CliRunner().invoke(main, ["plot-embeddings", "--encoder", "minilm", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "t-SNE of 600 classes embedded by minilm" in result.output and out.stat().st_size > 10_000
