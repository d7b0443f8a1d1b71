"""The Python module end to end: train (with the step callback), load, score (against
ssm-score), embed, generate, errors. Environment: SSM_LIBRARY (libssm-python.so), SSM_SRC
(the source tree), SSM_BIN (the programs, for the comparison with ssm-score)."""
import math
import os
import subprocess

import numpy as np
import pytest

import ssm

SRC = os.environ.get("SSM_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
FASTA = os.path.join(SRC, "tests", "data", "fasta", "ok.fa")


@pytest.fixture(scope="session")
def recipe(tmp_path_factory):
    d = tmp_path_factory.mktemp("py")
    path = d / "tiny.yaml"
    path.write_text(
        "model: {d_model: 16, n_layer: 2, d_state: 4}\n"
        "task: {name: dna}\n"
        "data: {train: [%s], valid_fraction: 0.05}\n"
        "train: {steps: 6, batch_size: 2, seq_len: 64, warmup_steps: 2, eval_every: 3,\n"
        "        eval_batches: 2, log_every: 1, threads: 2}\n"
        "output: {dir: %s}\n" % (os.path.join(SRC, "data", "ecoli", "NC_008253.fna.gz"), d / "run"))
    return path


@pytest.fixture(scope="session")
def run(recipe):
    steps = []
    out = ssm.train(str(recipe), callback=steps.append)
    assert [s.step for s in steps] == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(s.loss) and s.lr > 0 and s.grad_norm > 0 for s in steps)
    return out


@pytest.fixture(scope="session")
def model(run):
    with ssm.load(run) as m:
        yield m


def test_train_writes_a_run(run):
    assert os.path.basename(run) == "run"
    for name in ["model.safetensors", "recipe.yaml", "metrics.jsonl", "report.html"]:
        assert os.path.exists(os.path.join(run, name)), name


def test_callback_stops_and_resume_continues(recipe, tmp_path):
    out = ssm.train(str(recipe), output=str(tmp_path / "r"), callback=lambda s: s.step == 2)
    steps = []
    ssm.train(resume=out, callback=steps.append)
    assert [s.step for s in steps] == [3, 4, 5, 6]


def test_callback_exception_propagates(recipe, tmp_path):
    def boom(step):
        raise ValueError("from the callback")
    with pytest.raises(ValueError, match="from the callback"):
        ssm.train(str(recipe), output=str(tmp_path / "e"), callback=boom)
    assert os.path.exists(tmp_path / "e" / "model.safetensors")  # saved before stopping


def test_model_summary(model):
    assert (model.task, model.symbol, model.d_model, model.n_layer) == ("dna", "base", 16, 2)
    assert model.n_params > 0


def test_score_sequence(model):
    s = model.score("ACGTTGCAAC")
    assert s.logp.dtype == np.float32 and s.logp.shape == (10,) and s.entropy.shape == (10,)
    assert np.all(s.logp < 0) and np.all(s.entropy > 0)
    assert np.all(s.entropy <= math.log(model.vocab_size) + 1e-4)


def test_windows_carry_the_state(model):
    seq = "ACGTTGCAACGGATTACA" * 20
    a, b = model.score(seq), model.score(seq, window=7)
    np.testing.assert_allclose(a.logp, b.logp, rtol=0, atol=1e-5)
    np.testing.assert_allclose(a.entropy, b.entropy, rtol=0, atol=1e-5)


def test_score_file_matches_ssm_score(model, run):
    recs = list(model.score_file(FASTA))
    assert [r.id for r in recs] == ["chr1", "chr2", "chr3"]
    assert np.isnan(recs[1].logp).sum() == 10  # chr2's N bases are not scored
    bin_dir = os.environ.get("SSM_BIN")
    if not bin_dir:
        pytest.skip("SSM_BIN not set: no ssm-score to compare with")
    tsv = subprocess.run([os.path.join(bin_dir, "ssm-score"), run, FASTA, "--quiet"], check=True,
                         capture_output=True, text=True).stdout.splitlines()[1:]
    for r, line in zip(recs, tsv):
        f = line.split("\t")
        assert f[0] == r.id and int(f[2]) == np.count_nonzero(~np.isnan(r.logp))
        assert abs(float(f[3]) - np.nansum(r.logp.astype(np.float64))) < 1e-3


def test_hidden_and_embed(model):
    seq = "ACGTTGCAACGGATTACA" * 5
    h = model.hidden(seq)
    assert h.shape == (90, 16) and h.dtype == np.float32
    assert h.base is not None  # a view of libssm's output, not a copy
    np.testing.assert_allclose(model.hidden(seq, window=11), h, rtol=0, atol=1e-5)
    np.testing.assert_allclose(model.embed(seq), h.mean(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(model.embed(seq, pool="last"), h[-1])
    assert not np.allclose(model.hidden(seq, layer=0), h)
    with pytest.raises(ValueError):
        model.embed(seq, pool="median")


def test_generate(model):
    g = model.generate("ACGT", length=50, temperature=0)
    bases = g.replace("\n", "")
    assert len(bases) == 50 and set(bases) <= set("ACGT")
    assert g == model.generate("ACGT", length=50, temperature=0)
    a, b = (model.generate("ACGT", length=50, seed=7) for _ in range(2))
    assert a == b and a != model.generate("ACGT", length=50, seed=8)


def test_errors_carry_the_library_message(recipe, tmp_path):
    with pytest.raises(ssm.SsmError, match="nonexistent"):
        ssm.load(str(tmp_path / "nonexistent"))
    with pytest.raises(ssm.SsmError, match="no_such_key"):
        ssm.train(str(recipe), output=str(tmp_path / "k"), set={"train.no_such_key": 1})
